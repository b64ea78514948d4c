#!/usr/bin/env bash
# The project's test command (README "Set-up", CI's .ci/run): installs what it needs, then runs
# format check, lint, type check, and the test suite (unit tests, doctests, examples and CLI
# smoke tests, quick reproductions). Slow tests are opt-in: `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
echo "[test] ruff format --check" >&2
.venv/bin/ruff format --check src tests benchmarks examples
echo "[test] ruff check" >&2
.venv/bin/ruff check src tests benchmarks examples
echo "[test] mypy" >&2
.venv/bin/mypy
echo "[test] pytest" >&2
if [ "$#" -eq 0 ]; then
    set -- -m "not slow"
fi
workers="${DYNSTAB_TEST_WORKERS:-2}"
.venv/bin/python -m pytest -p no:cacheprovider -n "$workers" "$@"
