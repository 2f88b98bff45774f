"""The layering: pages -> ui -> core. No module of core imports streamlit or ui, in any subpackage."""
from __future__ import annotations

import ast
import importlib
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


COMMANDS = {"train": "model.train", "evaluate": "model.evaluate", "calibrate": "model.calibrate",
            "validate": "validation.validate", "download": "data.download", "dataset_stats": "eda.dataset_stats"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_documented_command_names_run_their_subpackage_main(name: str):
    """`python -m core.<name>` (the names documented before the subpackages) still runs the command."""
    assert importlib.import_module(f"core.{name}").main is importlib.import_module(f"core.{COMMANDS[name]}").main
