"""The home page (app_pages/0_Home.py, the first entry of app.py's st.navigation menu) with the committed default bundle."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def test_app_opens_on_the_home_page_with_the_default_model(monkeypatch) -> None:
    monkeypatch.delenv("DERMO_MODEL_DIR", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Dermoscopy decision support"
    assert "not a screening tool" in at.markdown[0].value
    labels = [m.label for m in at.metric]
    assert labels == ["Balanced accuracy", "Melanoma AUROC", "Malignant AUROC", "Test images"]
    assert not at.error


def test_home_page_without_a_model_says_so(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DERMO_MODEL_DIR", str(tmp_path / "missing"))
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and not at.metric
    st.cache_resource.clear()
    st.cache_data.clear()
