"""Cached loaders for the Model performance page (the comparison study's results)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import streamlit as st

from core.config import REPO_ROOT
from core.errors import InputError

#: Environment variable naming the comparison study's results file.
COMPARISON_ENV = "DERMO_COMPARISON"
DEFAULT_COMPARISON = REPO_ROOT / "results" / "comparison.json"


def comparison_path() -> Path:
    return Path(os.environ.get(COMPARISON_ENV, DEFAULT_COMPARISON))


@st.cache_data
def _read(path: str, mtime: float) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}).") from None


def get_comparison() -> dict[str, Any] | None:
    """The study's results, or None before the study has been run (re-read when the file changes)."""
    path = comparison_path()
    if not path.is_file():
        return None
    return _read(str(path), path.stat().st_mtime)
