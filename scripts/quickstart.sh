#!/usr/bin/env bash
# The main job on a fresh machine: install, then reproduce the Wu & Su (ICML 2023) experiments
# with the quick profile (a few minutes on 2 cores). Outputs: runs/quick/ (report.md/.html,
# figures, metrics, claims). Extra arguments are passed to `dynstab reproduce`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/dynstab reproduce wu-su-2023 --quick --out runs/quick "$@"
