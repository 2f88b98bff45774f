"""Every progress bar in the app says what it waits for.

Streamlit drops a bar's text on any update that passes none, so a bar created with a label and
then updated with `bar.progress(f)` shows unlabelled (the explorer's colour statistics did, for
about 14 s on a cold load). This reads the app's source: every `.progress(...)` call in app.py,
app_pages/ and ui/ must pass `text=`.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]


def unlabelled_progress_calls(path: Path) -> list[int]:
    """Line numbers of `.progress(...)` calls without a text= argument."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "progress"
            and not any(k.arg == "text" for k in node.keywords)]


def test_every_progress_bar_is_labelled() -> None:
    found = {path.relative_to(ROOT).as_posix(): lines for path in SOURCES if (lines := unlabelled_progress_calls(path))}
    assert found == {}


def test_the_check_finds_an_unlabelled_bar(tmp_path: Path) -> None:
    page = tmp_path / "page.py"
    page.write_text("bar = st.progress(0.0, text='Reading...')\nbar.progress(0.5)\nbar.progress(1.0, text='Done')\n")
    assert unlabelled_progress_calls(page) == [2]
