"""The two packages import one way only (see docs/design.md).

* Inside the library ``dynstab``, a module may import dynstab modules of strictly lower rank, or
  modules of its own unit; the numerical core (ranks <= training) never imports matplotlib.
* Nothing in ``dynstab`` imports the reproduction harness ``dynstab_repro``.
* ``dynstab_repro`` uses the library's public API only: no private module, no private name, and
  every imported name is listed in the ``__all__`` of the module it comes from.
* ``import dynstab`` loads neither the harness nor matplotlib.
* No function in ``dynstab_repro`` computes a gradient, an optimizer step or an eigen- or
  singular-value decomposition by itself: the harness trains and measures through the library
  (least-squares solves that construct a test minimum are not decompositions and are allowed).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src"
SRC = ROOT / "dynstab"
REPRO = ROOT / "dynstab_repro"

RANK = {
    "_version": -1,
    "_types": 0,
    "_checks": 0,
    "_docs": 0,
    "io": 0,
    "errors": 0,
    "losses": 0,
    "linalg": 1,
    "models": 1,
    "data": 1,
    "sampling": 1,
    "curvature": 2,
    "measures": 3,
    "norms": 3,
    "function_space": 3,
    "criteria": 4,
    "training": 5,
    "plotting": 6,
    "cli": 7,
}
CORE_MAX_RANK = RANK["training"]


def _unit(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every absolute import in ``path`` (no names for ``import m``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)
REPRO_MODULES = sorted(REPRO.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_library_imports_point_down(path: Path) -> None:
    unit = _unit(path)
    assert unit in RANK, f"new top-level unit {unit!r}: add it to RANK here and to docs/design.md"
    own = RANK[unit]
    for name, _ in _imports(path):
        parts = name.split(".")
        if parts[0] == "matplotlib":
            assert own > CORE_MAX_RANK, f"{path.name}: the core must not import matplotlib"
        assert parts[0] != "dynstab_repro", f"{path}: the library must not import the harness"
        if parts[0] != "dynstab" or len(parts) < 2:
            continue
        target = parts[1]
        if target == unit:
            continue
        assert target in RANK, f"{path}: imports unknown unit {name!r}"
        assert RANK[target] < own, (
            f"{path.relative_to(SRC)} (rank {own}) imports {name} (rank {RANK[target]}): "
            "imports must point to lower layers (docs/design.md)"
        )


def _code_strings(path: Path) -> list[str]:
    """String literals of ``path`` other than docstrings (e.g. names given to importlib)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            docstrings.add(id(body[0].value))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_library_never_loads_the_harness(path: Path) -> None:
    named = [s for s in _code_strings(path) if "dynstab_repro" in s]
    assert not named, (
        f"{path.relative_to(SRC)} names dynstab_repro in code ({named}): the library must not "
        "depend on the harness (its commands reach the CLI through 'dynstab.commands' entry points)"
    )


@pytest.mark.parametrize("path", REPRO_MODULES, ids=lambda p: str(p.relative_to(REPRO)))
def test_harness_uses_public_api_only(path: Path) -> None:
    for name, names in _imports(path):
        parts = name.split(".")
        if parts[0] != "dynstab":
            continue
        private = [p for p in parts if p.startswith("_")]
        assert not private, f"{path.relative_to(REPRO)}: imports private module {name}"
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        public = (
            set(exported)
            if exported is not None
            else {k for k in vars(module) if not k.startswith("_")}
        )
        for n in names:
            assert not n.startswith("_"), f"{path.relative_to(REPRO)}: imports private {name}.{n}"
            is_module = (
                importlib.util.find_spec(f"{name}.{n}") is not None
                if hasattr(module, "__path__")
                else False
            )
            assert n in public or is_module, (
                f"{path.relative_to(REPRO)}: imports {n!r} from {name}, which does not export it "
                f"in __all__; use the public API (or export it there if it is meant to be public)"
            )


#: Calls that compute a gradient, an optimizer step or a spectral decomposition; the harness
#: must leave them to the library (dotted suffixes of the called name).
_NUMERICS_OF_THE_LIBRARY = {
    "backward": "a gradient (autograd)",
    "autograd.grad": "a gradient (autograd)",
    "torch.func.grad": "a gradient (torch.func)",
    "vjp": "a gradient (vector–Jacobian product)",
    "jvp": "a Jacobian–vector product",
    "jacrev": "a Jacobian",
    "jacfwd": "a Jacobian",
    "hessian": "a Hessian",
    "step": "an optimizer step",
    "eig": "an eigendecomposition",
    "eigh": "an eigendecomposition",
    "eigvals": "an eigendecomposition",
    "eigvalsh": "an eigendecomposition",
    "eigsh": "an eigendecomposition",
    "svd": "a singular value decomposition",
    "svdvals": "a singular value decomposition",
}


def _dotted(node: ast.expr) -> str:
    """``a.b.c`` for a (possibly attribute-chained) name; ``""`` for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ".".join(reversed(parts)) if parts else ""


def _own_numerics(path: Path) -> list[str]:
    """Calls in ``path`` that the harness must leave to the library, and ``torch.optim`` uses."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and _dotted(node).startswith("torch.optim"):
            found.append(f"line {node.lineno}: torch.optim (an optimizer)")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        for suffix, what in _NUMERICS_OF_THE_LIBRARY.items():
            if name == suffix or name.endswith("." + suffix):
                found.append(f"line {node.lineno}: {name}(...) computes {what}")
    return found


@pytest.mark.parametrize("path", REPRO_MODULES, ids=lambda p: str(p.relative_to(REPRO)))
def test_harness_computes_no_gradient_step_or_decomposition_itself(path: Path) -> None:
    found = _own_numerics(path)
    assert not found, (
        f"{path.relative_to(REPRO)}: " + "; ".join(found) + ". The harness trains with "
        "dynstab.training and measures with dynstab's curvature/criteria API; add what is "
        "missing to the library instead."
    )


def test_the_numerics_check_sees_what_it_forbids(tmp_path: Path) -> None:
    code = (
        "import torch\n"
        "def f(model, loss, K):\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    g = torch.autograd.grad(loss, list(model.parameters()))\n"
        "    return torch.linalg.eigvalsh(K), g\n"
    )
    path = tmp_path / "bad.py"
    path.write_text(code, encoding="utf-8")
    found = "\n".join(_own_numerics(path))
    for what in ("torch.optim", "loss.backward", "opt.step", "torch.autograd.grad", "eigvalsh"):
        assert what in found, (what, found)


def test_import_dynstab_loads_neither_harness_nor_matplotlib() -> None:
    code = (
        "import sys, dynstab, dynstab.training, dynstab.criteria, dynstab.measures\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "bad = sorted(top & {'dynstab_repro', 'matplotlib'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import dynstab loaded: {out.stdout.strip()}"
