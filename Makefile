# Developer shortcuts. The package itself needs no make: see README "Set-up".
.PHONY: bench bench-quick test quick

# All benchmarks against the tools users would otherwise pick (PyHessian, curvlinops, BackPACK,
# installed only in .venv-bench with torch pinned), then rewrite docs/benchmarks.md. ~15 min.
bench:
	bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/run_all.py

# The same at small sizes (a few minutes); rewrites docs/benchmarks.md too.
bench-quick:
	bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/run_all.py --quick

test:
	bash scripts/test.sh

quick:
	bash scripts/quickstart.sh
