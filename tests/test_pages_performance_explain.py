"""AppTest of the Explanations and Model performance pages with no dataset present.

A copy of the tiny bundle gets what the commands store (test metrics with aggregates from
`core.model.evaluate`, explanations from `core.explain.importance`) computed on synthetic data; the pages must
show every chart from those files alone. The committed default bundle is run too.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import torch
from figure_checks import assert_toolbar_room
from streamlit.testing.v1 import AppTest

from core import config
from core.explain.importance import EXPLANATIONS_FILE, compute_global
from core.model.bundle import load_bundle, write_card
from core.model.evaluate import eval_dataset, evaluate_model

PAGES = Path(__file__).resolve().parent.parent / "app_pages"
PERF, EXPLAIN = str(PAGES / "4_Model_Performance.py"), str(PAGES / "3_Explanations.py")


def synthetic_split(n: int = 42, seed: int = 0) -> tuple[pd.DataFrame, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(config.CLASSES)
    frame = pd.DataFrame({
        "image_id": [f"img{i}" for i in range(n)], "group_id": [f"les{i // 2}" for i in range(n)],
        "dx": [config.CLASSES[i] for i in labels], "label": labels,
        "age": rng.choice([25.0, 50.0, 80.0, np.nan], n), "sex": rng.choice(["male", "female", "unknown"], n),
        "site": rng.choice(["back", "face", "unknown"], n), "dx_type": rng.choice(["histo", "follow_up"], n),
    })
    frame["age_missing"] = frame["age"].isna()
    return frame, [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def full_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle plus stored test aggregates, history and explanations."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("pages") / "bundle"
    shutil.copytree(tiny_bundle, out)
    model, card = load_bundle(out)
    frame, images = synthetic_split()
    card["metrics"] = evaluate_model(model, card, eval_dataset(card, frame, images), frame, n_boot=20)
    card["history"] = [{"epoch": e, "train_loss": 2.0 - e / 10, "val_loss": 2.1 - e / 12, "train_accuracy": 0.3 + e / 20,
                        "val_accuracy": 0.3 + e / 25, "val_balanced_accuracy": 0.2 + e / 30} for e in (1, 2, 3)]
    card["referral_thresholds"]["malignant"]["how"] = "highest threshold reaching 90% sensitivity on validation"
    write_card(card, out)
    (out / EXPLANATIONS_FILE).write_text(json.dumps({**compute_global(model, card, frame, images, 2, 12, use_shap=False), "split": "val"}))
    return out


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No dataset, no comparison results; caches cleared so each test sees its own bundle."""
    monkeypatch.setenv("DERMO_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("DERMO_COMPARISON", str(tmp_path / "comparison.json"))
    monkeypatch.setenv("DERMO_PAIRED_DIFFERENCES", str(tmp_path / "paired_differences.json"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield monkeypatch
    st.cache_data.clear()
    st.cache_resource.clear()


def run(page: str) -> AppTest:
    at = AppTest.from_file(page, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def test_performance_page_from_stored_aggregates(full_bundle: Path, env, tmp_path: Path) -> None:
    env.setenv("DERMO_MODEL_DIR", str(full_bundle))
    (tmp_path / "comparison.json").write_text(json.dumps({"description": "test", "rows": [
        {"label": "papercnn", "status": "skipped", "note": "not run in this test"}], "differences": [
        {"comparison": "papercnn-fusion - lite0-fusion", "metric": metric, "difference": -0.1, "ci95": [-0.15, -0.05],
         "trainings": 1, "verdict": "unconfirmed"} for metric in ("balanced_accuracy", "melanoma_auroc", "malignant_auroc")]}))
    (tmp_path / "paired_differences.json").write_text(json.dumps({
        "description": "test", "n_images": 42, "n_lesions": 21, "bootstrap": 20, "differences": [
            {"comparison": comparison, "metric": metric, "difference": diff, "ci95": [diff - 0.02, diff + 0.02]}
            for comparison, diff in (("A - B", 0.01), ("A - C", 0.05))
            for metric in ("balanced_accuracy", "melanoma_auroc", "malignant_auroc")]}))
    at = run(PERF)
    # confusion, history, 2x ROC/PR, operating point, 3 reliability (malignant, melanoma, top), subgroups,
    # paired differences, the comparison rows against the default; no evaluated comparison row
    assert charts(at) == 11
    assert any("Ties: A - B, balanced accuracy; A - B, melanoma AUROC; A - B, malignant AUROC." in c.value
               for c in at.caption)
    assert any("not claimed" in c.value and "papercnn-fusion - lite0-fusion, balanced accuracy" in c.value
               for c in at.caption)
    assert not at.error
    assert len(at.dataframe) >= 3  # per class, subgroups, comparison
    at.slider(key="perf_target_sensitivity").set_value(0.8).run()
    assert not at.exception
    at.radio(key="perf_confusion_mode").set_value("Row-normalised").run()
    at.selectbox(key="perf_subgroup_by").set_value("age band").run()
    assert not at.exception and charts(at) == 11
    assert_toolbar_room(at)


def test_explanations_page_from_stored_results(full_bundle: Path, env) -> None:
    env.setenv("DERMO_MODEL_DIR", str(full_bundle))
    at = run(EXPLAIN)
    assert charts(at) == 3  # permutation, SHAP bar, beeswarm
    assert not at.error
    assert "Pick from the validation/test images" not in at.radio(key="explain_source").options
    at.radio(key="explain_perm_metric").set_value("melanoma_auroc").run()
    at.selectbox(key="explain_shap_output").set_value("malignant").run()
    assert not at.exception and charts(at) == 3
    names = at.selectbox(key="explain_shap_output").options  # as displayed
    assert_toolbar_room(at)
    assert "Melanoma" in names and "Melanoma risk" in names and "mel" not in names


@pytest.mark.parametrize("folder", ["root", "ham10000"])
def test_explanations_with_the_documented_data_dir(full_bundle: Path, env, ham_dir: Path, folder: str) -> None:
    """DERMO_DATA_DIR as the README documents it (../shared/data, absolute), or the HAM10000 folder itself:
    the picker and the recompute button are there, and a picked image is explained with class names."""
    env.setenv("DERMO_MODEL_DIR", str(full_bundle))
    env.setenv("DERMO_DATA_DIR", str((ham_dir.parent if folder == "root" else ham_dir).resolve()))
    at = run(EXPLAIN)
    assert "Pick from the validation/test images" in at.radio(key="explain_source").options
    assert at.button(key="explain_recompute").label.startswith("Recompute")
    at.radio(key="explain_source").set_value("Pick from the validation/test images").run()
    assert not at.exception and not at.error
    pick = at.selectbox(key="explain_pick")
    assert len(pick.options) > 2000  # validation + test images only
    assert "(" in pick.options[0] and pick.options[0].endswith("split)")
    assert any(name in pick.options[0] for name in config.CLASS_NAMES.values())
    estimate = next(m.value for m in at.markdown if m.value.startswith("**Estimate:**"))
    assert any(name in estimate for name in config.CLASS_NAMES.values())
    assert at.get("plotly_chart")[-1].proto.spec  # the metadata waterfall
    at.select_slider(key="explain_shap_samples").set_value(16)
    at.slider(key="explain_shap_budget").set_value(5)
    at.button(key="explain_shap_run").click().run()
    assert not at.exception and not at.error
    assert any("samples per class in" in c.value and "5 s budget" in c.value for c in at.caption)
    assert_toolbar_room(at)  # waterfall and the image SHAP map with its subplot titles


def test_pages_with_the_default_bundle(default_bundle: Path, env) -> None:
    env.setenv("DERMO_MODEL_DIR", str(default_bundle))
    for page in (PERF, EXPLAIN):
        at = run(page)
        assert not at.error
        assert charts(at) >= 1 or len(at.info) >= 1
