"""Cached loaders shared by every page: one model per process, not one per rerun."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import streamlit as st

from core.config import DEFAULT_MODEL, WEIGHTS_DIR
from core.errors import InputError
from core.inference import Predictor
from core.model.bundle import read_card
from core.model.concurrency import configure_torch_threads

#: Environment variable naming the bundle folder the app serves (default weights/fusion-lite0).
MODEL_ENV = "DERMO_MODEL_DIR"
T = TypeVar("T")


def model_dir() -> Path:
    return Path(os.environ.get(MODEL_ENV, WEIGHTS_DIR / DEFAULT_MODEL))


@st.cache_resource(show_spinner="Loading the model...")
def get_predictor(bundle_dir: str | None = None) -> Predictor:
    """The shared, read-only Predictor (thread-safe for prediction); torch's thread count is set
    here, once, from the server's bound on concurrent model work (core.model.concurrency)."""
    configure_torch_threads()
    return Predictor.load(bundle_dir or model_dir())


@st.cache_data
def get_card(bundle_dir: str | None = None) -> dict:
    return read_card(bundle_dir or model_dir())


def _or_stop(load: Callable[[], T], failure: str) -> T:
    """load(); if the bundle is unusable, a clear message (no traceback) and the page stops."""
    try:
        return load()
    except InputError as exc:
        st.error(f"The {failure} from {model_dir()}: {exc}")
        st.stop()


def predictor_or_stop() -> Predictor:
    """The shared Predictor, or a message and the page stops."""
    return _or_stop(get_predictor, "model could not be loaded")


def card_or_stop() -> dict:
    """The served model's card, or a message and the page stops."""
    return _or_stop(get_card, "model card could not be read")
