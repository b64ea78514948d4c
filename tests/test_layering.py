"""The package's layers import one way only (see docs/design.md).

A module may import dynstab modules of strictly lower rank, or modules of its own package.
The numerical core (ranks <= training) never imports matplotlib.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dynstab"

RANK = {
    "_types": 0,
    "_checks": 0,
    "_version": 0,
    "_io": 0,
    "errors": 0,
    "losses": 0,
    "linalg": 1,
    "models": 1,
    "data": 1,
    "curvature": 2,
    "measures": 3,
    "norms": 3,
    "function_space": 3,
    "criteria": 4,
    "training": 5,
    "plotting": 6,
    "experiments": 7,
    "cli": 8,
}
CORE_MAX_RANK = RANK["training"]


def _unit(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    unit = _unit(path)
    assert unit in RANK, f"new top-level unit {unit!r}: add it to RANK here and to docs/design.md"
    own = RANK[unit]
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "matplotlib":
            assert own > CORE_MAX_RANK, f"{path.name}: the core must not import matplotlib"
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
