"""The layering: pages -> ui -> core. No module of core imports streamlit or ui, in any subpackage."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "core"
MODULES = sorted(CORE.rglob("*.py"))


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return roots | {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def test_core_is_grouped_into_subpackages():
    assert len(MODULES) > 30 and {p.parent.name for p in MODULES} >= {"data", "model", "clinic", "explain", "eda", "figures"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(CORE).as_posix())
def test_core_never_imports_streamlit_or_ui(path: Path):
    assert not imported_roots(path) & {"streamlit", "ui", "app_pages"}
