"""Shared fixtures: the real data (skipped only where ../shared/data is absent), a tiny bundle,
and the committed default bundle."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from core import config
from core.data.metadata import MetadataEncoder
from core.model.bundle import save_bundle
from core.model.networks import build_model

HAM_DIR = config.DEFAULT_DATA_DIR / "ham10000"
ISIC_CSV = config.DEFAULT_DATA_DIR / "isic2020" / "train.csv"


@pytest.fixture(scope="session")
def ham_dir() -> Path:
    if not (HAM_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real data not present at {HAM_DIR}")
    return HAM_DIR


@pytest.fixture(scope="session")
def real_image(ham_dir: Path) -> Path:
    return ham_dir / "images" / "ISIC_0024306.jpg"


def tiny_card(encoder: MetadataEncoder, backbone: str = "papercnn", use_metadata: bool = True) -> dict:
    """A complete model card for a small random model (what training writes, minus history/metrics)."""
    return {
        "name": f"tiny-{backbone}",
        "version": "test",
        "classes": list(config.CLASSES),
        "class_names": config.CLASS_NAMES,
        "malignant": list(config.MALIGNANT),
        "melanoma": config.MELANOMA,
        "input": {"size": [128, 128], "mean": list(config.IMAGENET_MEAN), "std": list(config.IMAGENET_STD)},
        "metadata": encoder.to_dict(),
        "model": {"backbone": backbone, "use_metadata": use_metadata, "head_hidden": 0, "freeze_stages": 0},
        "training": {"seed": config.SEED},
        "temperature": 1.0,
        "referral_thresholds": {"malignant": {"threshold": 0.3}, "melanoma": {"threshold": 0.1}},
    }


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight papercnn fusion bundle: fast, deterministic, valid in every respect."""
    torch.manual_seed(0)
    encoder = MetadataEncoder()
    model, _ = build_model("papercnn", encoder.dim, len(config.CLASSES), pretrained=False)
    model.eval()
    return save_bundle(model, tiny_card(encoder), tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    """The committed default model (override with DERMO_MODEL_DIR while it is being trained)."""
    path = Path(os.environ.get("DERMO_MODEL_DIR", config.WEIGHTS_DIR / config.DEFAULT_MODEL))
    if not (path / "model_card.json").is_file():
        pytest.fail(f"no model bundle at {path}")
    return path


@pytest.fixture(scope="session")
def lesion_jpeg() -> bytes:
    """A real HAM10000 image where ../shared/data is present, else a synthetic lesion (JPEG bytes)."""
    import io

    from PIL import Image

    from tests.test_quality import lesion_like

    real = HAM_DIR / "images" / "ISIC_0024306.jpg"
    if real.is_file():
        return real.read_bytes()
    out = io.BytesIO()
    Image.fromarray(lesion_like(np.random.default_rng(0))).save(out, "JPEG", quality=95)
    return out.getvalue()


def _serve(bundle: Path, folder: Path):
    """`streamlit run app.py` on the given bundle with a throwaway audit log; skips only where Chromium or
    chromedriver is missing."""
    from tests.live_app import browser_missing, live_app

    if reason := browser_missing():
        pytest.skip(reason)
    env = {"DERMO_MODEL_DIR": str(bundle), "DERMO_AUDIT_DB": str(folder / "audit.sqlite3")}
    with live_app(env, folder / "streamlit.log") as app:
        yield app.url


@pytest.fixture(scope="session")
def live_url(default_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The real app on the default model, one server for every browser test."""
    yield from _serve(default_bundle, tmp_path_factory.mktemp("live_app"))


@pytest.fixture
def app_url(default_bundle: Path, tmp_path: Path):
    """A server started for this test alone: a deep link must work on a server no page has visited yet."""
    yield from _serve(default_bundle, tmp_path)


@pytest.fixture
def driver():
    """A headless Chromium for one test."""
    from tests.live_app import browser_missing, chromium

    if reason := browser_missing():
        pytest.skip(reason)
    browser = chromium()
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
