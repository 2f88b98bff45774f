"""Cached loaders for the Explanations page: stored global results, the dataset picker, image features."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.config import DEFAULT_DATA_DIR, SPLITS_DIR
from core.explain import read_explanations
from core.inference import Predictor

#: Environment variable naming the HAM10000 folder (absent on a fresh machine: the page still works).
DATA_ENV = "DERMO_DATA_DIR"


def data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, DEFAULT_DATA_DIR / "ham10000"))


def dataset_present() -> bool:
    return (data_dir() / "HAM10000_metadata.csv").is_file()


@st.cache_data(show_spinner=False)
def get_explanations(bundle_dir: str, mtime: float) -> dict[str, Any] | None:
    """The bundle's explanations.json (`mtime` keys the cache, so a recomputed file is re-read)."""
    return read_explanations(bundle_dir)


def explanations_mtime(bundle_dir: Path) -> float:
    path = bundle_dir / "explanations.json"
    return path.stat().st_mtime if path.is_file() else 0.0


@st.cache_data(show_spinner="Reading the dataset index...")
def dataset_index(root: str, split_file: str) -> pd.DataFrame:
    """Validation and test images (never training images) with their metadata, for the picker."""
    from core.data import load_ham10000

    frame, _ = load_ham10000(root)
    split = pd.read_csv(split_file) if Path(split_file).is_file() else None
    if split is not None:
        frame = frame.merge(split, on="image_id", how="left")
        frame = frame[frame["split"].isin(["val", "test"])]
    frame = frame[frame["image_path"].notna()]
    return frame[["image_id", "dx", "age", "sex", "site", "image_path"] + (["split"] if "split" in frame else [])]


def picker_index() -> pd.DataFrame:
    return dataset_index(str(data_dir()), str(SPLITS_DIR / "ham10000.csv"))


@st.cache_data(show_spinner=False, max_entries=32)
def image_features(_predictor: Predictor, model_key: str, image_key: str, _image: torch.Tensor) -> np.ndarray:
    """Backbone features of one preprocessed image (reused by every metadata what-if on the page)."""
    with torch.no_grad():
        return _predictor.model.forward_features(_image.unsqueeze(0)).numpy()
