"""Cached loaders shared by every page: one model per process, not one per rerun."""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.bundle import read_card
from core.config import DEFAULT_MODEL, WEIGHTS_DIR
from core.errors import InputError
from core.inference import Predictor

#: Environment variable naming the bundle folder the app serves (default weights/fusion-lite0).
MODEL_ENV = "DERMO_MODEL_DIR"


def model_dir() -> Path:
    return Path(os.environ.get(MODEL_ENV, WEIGHTS_DIR / DEFAULT_MODEL))


@st.cache_resource(show_spinner="Loading the model...")
def get_predictor(bundle_dir: str | None = None) -> Predictor:
    """The shared, read-only Predictor (thread-safe for prediction)."""
    return Predictor.load(bundle_dir or model_dir())


@st.cache_data
def get_card(bundle_dir: str | None = None) -> dict:
    return read_card(bundle_dir or model_dir())


def predictor_or_stop() -> Predictor:
    """The shared Predictor; if the bundle cannot be loaded, a clear message and the page stops."""
    try:
        return get_predictor()
    except InputError as exc:
        st.error(f"The model could not be loaded from {model_dir()}: {exc}")
        st.stop()


def card_or_stop() -> dict:
    """The served model's card; if it cannot be read, a clear message and the page stops."""
    try:
        return get_card()
    except InputError as exc:
        st.error(f"The model card could not be read from {model_dir()}: {exc}")
        st.stop()
