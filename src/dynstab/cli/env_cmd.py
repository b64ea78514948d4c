"""``dynstab env``: versions, threads, devices and git commit (what ``env.json`` records)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def _cmd_env(args: argparse.Namespace) -> int:
    from dynstab.io import environment_info

    info = environment_info()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "(unset)"
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        print(f"{key:<{width}}  {value}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``env`` command to ``subparsers``."""
    p = subparsers.add_parser("env", help="show versions, threads and devices")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_env)
