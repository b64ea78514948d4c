# Developer shortcuts. The package itself needs no make: see README "Set-up".
.PHONY: bench bench-quick test quick

# All benchmarks against the tools users would otherwise pick (PyHessian, curvlinops, BackPACK,
# installed only in .venv-bench with torch pinned), then rewrite docs/benchmarks.md. ~15 min
# on an idle 2-core machine. BENCH_ARGS passes options, e.g. BENCH_ARGS="--jobs 3" runs three
# scripts side by side (each ratio is still measured inside one process).
bench:
	bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/run_all.py $(BENCH_ARGS)

# The same at small sizes (a few minutes); rewrites docs/benchmarks.md too.
bench-quick:
	bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/run_all.py --quick $(BENCH_ARGS)

test:
	bash scripts/test.sh

quick:
	bash scripts/quickstart.sh
