"""Dense vs matrix-free exact η* (Gram reduction) as n grows, scalar outputs.

Two families of random Gram matrices K = JJᵀ/n (J Gaussian with column scales in [0.1, 1]):

* low rank (P = 30 parameters, so ρ = 30): dense and matrix-free are both feasible, and the
  table reports their agreement;
* full rank (P = n + 20, ρ = n): the dense symmetric-space matrix has ρ(ρ+1)/2 rows, so only
  the matrix-free Lanczos runs (dense "—" beyond ρ(ρ+1)/2 > 2000).

Usage:  python benchmarks/eta_star_scaling.py [--threads 2] [--batch-size 8] [--with-5000]
"""

from __future__ import annotations

import argparse
import time

import torch

from dynstab.criteria import eta_star, gram_coordinates


def make_gram(n: int, P: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(n, P, generator=g, dtype=torch.float64)
    J = J * torch.linspace(0.1, 1.0, P, dtype=torch.float64)
    return J @ J.T / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--sampling", default="with", choices=("with", "without"))
    ap.add_argument("--with-5000", action="store_true", help="also run n = 5000 (slow)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [100, 200, 500, 1000, 2000] + ([5000] if args.with_5000 else [])
    B, s = args.batch_size, args.sampling
    print(f"threads={torch.get_num_threads()}  B={B}  sampling={s}")
    hdr = (
        f"{'family':<9} {'n':>5} {'rank':>5} {'eigh s':>7} {'dense s':>8} {'mf s':>7} "
        f"{'matvecs':>7} {'eta* (mf)':>14} {'rel. diff':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for family in ("low-rank", "full-rank"):
        for n in sizes:
            P = 30 if family == "low-rank" else n + 20
            K = make_gram(n, P, seed=n)
            t0 = time.perf_counter()
            c = gram_coordinates(K)
            t_eigh = time.perf_counter() - t0
            t0 = time.perf_counter()
            mf = eta_star(K, B, s, method="matrix_free", coords=c)
            t_mf = time.perf_counter() - t0
            dense_s, diff = "—", "—"
            if c.rank * (c.rank + 1) // 2 <= 2000:
                t0 = time.perf_counter()
                d = eta_star(K, B, s, method="dense", coords=c)
                dense_s = f"{time.perf_counter() - t0:8.3f}"
                diff = f"{abs(mf.eta_star - d.eta_star) / d.eta_star:9.1e}"
            print(
                f"{family:<9} {n:>5} {c.rank:>5} {t_eigh:7.2f} {dense_s:>8} {t_mf:7.2f} "
                f"{mf.num_matvecs:>7} {mf.eta_star:14.10g} {diff:>9}"
                + ("" if mf.converged else "  (not converged)")
            )


if __name__ == "__main__":
    main()
