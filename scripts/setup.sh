#!/usr/bin/env bash
# Create (or reuse) .venv and install dynstab with its dev extras.
# torch is pinned to 2.13.0 through constraints/ci.txt: on these machines that is the local CPU
# build; an unpinned torch would pull a multi-GB CUDA build. The package itself only asks for a range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.dynstab-install-stamp
want="$(cat pyproject.toml constraints/ci.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing dynstab[dev] into .venv (torch pinned by constraints/ci.txt)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints/ci.txt -e ".[dev]"
    echo "$want" > "$stamp"
fi
