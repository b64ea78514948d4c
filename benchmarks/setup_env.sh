#!/usr/bin/env bash
# Create the benchmark environment .venv-bench in the repository root.
#
# The comparison tools (PyHessian, curvlinops, BackPACK) are installed HERE ONLY, never as
# runtime dependencies of dynstab. torch is pinned through constraints/ci.txt (the local CPU
# build); an unpinned torch would pull a multi-GB CUDA build, so the constraints file is always
# passed. Idempotent: re-running only installs what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/.venv-bench"
PY="${PYTHON:-python3}"

if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "[setup_env] creating ${VENV}"
    "${PY}" -m venv "${VENV}"
fi
# Keep the environment out of git whatever the repository's .gitignore says.
printf '*\n' > "${VENV}/.gitignore"

STAMP="${VENV}/.bench-installed"
REQS="pyhessian==0.1 curvlinops-for-pytorch==3.0.1 backpack-for-pytorch==1.7.1 threadpoolctl>=3.1"
cd "${ROOT}"
# Re-install when the tool pins, dynstab's dependencies or the torch pin change.
WANT="$(printf '%s\n' "${REQS}" | cat - pyproject.toml constraints/ci.txt | sha256sum | cut -d' ' -f1)"
if [[ -f "${STAMP}" ]] && [[ "$(cat "${STAMP}")" == "${WANT}" ]]; then
    echo "[setup_env] ${VENV} already set up (${REQS})"
    exit 0
fi

"${VENV}/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"${VENV}/bin/python" -m pip install --quiet -c constraints/ci.txt -e . ${REQS}
"${VENV}/bin/python" - <<'PY'
import importlib.metadata as md
import torch
assert torch.__version__.startswith("2.13.0"), f"torch pin not honoured: {torch.__version__}"
for name in ("dynstab", "pyhessian", "curvlinops-for-pytorch", "backpack-for-pytorch", "scipy"):
    print(f"[setup_env] {name}=={md.version(name)}")
print(f"[setup_env] torch=={torch.__version__}")
PY
echo "${WANT}" > "${STAMP}"
