"""Dataset explorer: choosing the data source, cached loading, colour statistics, filters.

Where the data comes from, in the order the sidebar offers it:

* the folder named by the environment variable DERMO_DATA_DIR (a HAM10000 folder, or a folder
  holding dataset folders / ISIC 2020 CSVs, e.g. ../shared/data);
* a path typed by the user (a HAM10000 folder, its metadata CSV, or an ISIC 2020 train.csv), only
  inside that folder (core.data.root.resolve_under) and only when it is set;
* an uploaded metadata CSV (metadata only: charts that need images are hidden);
* the statistics stored with the default model (dataset_stats.json in the bundle folder),
  which is all a fresh machine has.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core.data.datasets import find_datasets, load_ham10000, load_metadata_csv
from core.data.root import DATA_ENV, confine_images, data_root, inside, resolve_under
from core.eda import tables as eda
from core.eda.dataset_stats import STATS_FILE, DatasetStats, colour_indices, image_histograms, read_stats
from core.errors import InputError

ENV_SOURCE, PATH_SOURCE, UPLOAD_SOURCE, STORED_SOURCE = (
    f"Folder in {DATA_ENV}", "Type a path", "Upload a metadata CSV", "Statistics stored with the model",
)
FILTER_KEYS = ("explorer_sex", "explorer_age", "explorer_site", "explorer_dx")
HOW_TO_GET_DATA = (
    f"To explore the full dataset, set the environment variable `{DATA_ENV}` to a folder holding HAM10000 "
    "(its metadata CSV and images) or the ISIC 2020 train.csv, and restart the app (a path inside that folder can "
    "then also be typed); or upload a metadata CSV in the sidebar. With internet access, `python -m core.data.download --dest ~/data/ham10000` "
    "fetches HAM10000 from the Harvard Dataverse (CC BY-NC 4.0)."
)


@dataclass
class Source:
    """A loaded data source. `frame` is None for stored statistics (only the cube exists)."""

    label: str
    layout: str
    cube: pd.DataFrame
    frame: pd.DataFrame | None = None
    duplicates: int = 0
    stats: DatasetStats | None = None
    key: str = ""

    @property
    def has_images(self) -> bool:
        return self.frame is not None and bool(self.frame["image_path"].notna().any())

    @property
    def group_word(self) -> str:
        """What HAM10000's lesion_id / ISIC 2020's patient_id groups are called."""
        return "patients" if self.layout == "isic2020" else "lesions"


# -- cached loading -----------------------------------------------------------------------
@st.cache_data(show_spinner="Reading the dataset...", max_entries=4)
def _load_path(path: str, mtime: float) -> tuple[pd.DataFrame, pd.DataFrame, str, int]:
    """A HAM10000 folder, or a HAM10000 / ISIC 2020 CSV (mtime is part of the cache key)."""
    target = Path(path)
    if target.is_dir():
        frame, report = load_ham10000(target)
        layout = "ham10000"
    else:
        frame, report, layout = load_metadata_csv(target, image_root=target.parent)
    root = data_root()
    if root is not None:  # the gallery and the colour statistics read these files
        frame = confine_images(frame, root)
    return frame, eda.to_cube(frame), layout, report.duplicates_dropped


@st.cache_data(show_spinner="Reading the uploaded CSV...", max_entries=4)
def _load_upload(data: bytes, name: str) -> tuple[pd.DataFrame, pd.DataFrame, str, int]:
    frame, report, layout = load_metadata_csv(data, name)
    return frame, eda.to_cube(frame), layout, report.duplicates_dropped


@st.cache_data(show_spinner=False, max_entries=2)
def _load_stored(path: str, mtime: float) -> DatasetStats:
    return read_stats(path)


@st.cache_data(show_spinner=False, ttl=60)
def datasets_under(root: str) -> dict[str, Path]:
    """The datasets under DERMO_DATA_DIR (re-scanned at most once a minute), without any that a link
    leads outside it; the Explanations page shares it."""
    return {label: path for label, path in find_datasets(root).items() if inside(root, path)}


def _mtime(path: Path) -> float:
    if not path.exists():
        raise InputError(f"No such file or folder: {path}")
    return path.stat().st_mtime


def stats_path() -> Path:
    """dataset_stats.json in the default model's bundle folder."""
    from ui.loaders import model_dir  # deferred: it imports torch, which the charts do not need

    return model_dir() / STATS_FILE


def load_stored() -> Source:
    path = stats_path()
    if not path.is_file():
        raise InputError(f"No stored dataset statistics at {path} (run `python -m core.eda.dataset_stats` to write them).")
    stats = _load_stored(str(path), _mtime(path))
    label = f"{stats.meta.get('source', 'stored statistics')}: {stats.meta.get('rows_used', '')}"
    return Source(label=label, layout=stats.meta.get("layout", "ham10000"), cube=stats.cube, stats=stats,
                  key=f"stored:{path}")


def load_path(path: Path | str) -> Source:
    path = Path(path).expanduser()
    frame, cube, layout, dups = _load_path(str(path), _mtime(path))
    return Source(label=str(path), layout=layout, cube=cube, frame=frame, duplicates=dups,
                  key=f"{path}:{_mtime(path)}")


# -- colour statistics (computed once per dataset, shared by every session) ----------------
@st.cache_resource
def _colour_store() -> tuple[dict, threading.Lock]:
    return {}, threading.Lock()


def image_colour(source: Source) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row colour histograms, decoded-ok mask and sampled mask, computed on first use.

    Shows a progress bar the first time (about 1 ms an image); afterwards it is a dict lookup.
    """
    store, lock = _colour_store()
    if source.key in store:
        return store[source.key]
    frame = source.frame
    rows = colour_indices(len(frame))
    waiting = "Colour statistics: waiting for another session computing them..." if lock.locked() else None
    bar = st.progress(0.0, text=waiting or _colour_label(0, len(rows)))
    with lock:
        if source.key not in store:
            hists, ok = image_histograms(frame["image_path"].iloc[rows].tolist(),
                                         progress=lambda i, n: bar.progress(i / max(n, 1), text=_colour_label(i, n)))
            full = np.zeros((len(frame), *hists.shape[1:]), dtype=np.float32)
            full_ok = np.zeros(len(frame), dtype=bool)
            sampled = np.zeros(len(frame), dtype=bool)
            full[rows], full_ok[rows], sampled[rows] = hists, ok, True
            while len(store) >= 4:
                store.pop(next(iter(store)))
            store[source.key] = (full, full_ok, sampled)
    bar.empty()
    return store[source.key]


def _colour_label(done: int, total: int) -> str:
    """The colour bar's text: every update must pass one, or Streamlit shows the bar unlabelled."""
    return f"Colour statistics, computed once per dataset: {done:,} of {total:,} images read..."


def unreadable_images(source: Source) -> int:
    """Images that exist but failed to decode (among those the colour statistics read)."""
    _, ok, sampled = image_colour(source)
    return int((sampled & ~ok & source.frame["image_path"].notna().to_numpy()).sum())


# -- sidebar ------------------------------------------------------------------------------
def choose_source() -> Source | None:
    """Sidebar widgets for the data source; returns the loaded source or None (waiting for input).

    Raises InputError with a readable message for a bad path or CSV.
    """
    root = data_root()
    found = datasets_under(str(root)) if root else {}
    options = ([ENV_SOURCE, PATH_SOURCE] if root else []) + [UPLOAD_SOURCE, STORED_SOURCE]
    default = options.index(ENV_SOURCE if found else STORED_SOURCE)
    choice = st.sidebar.radio("Data source", options, index=default, key="explorer_source")
    if choice == ENV_SOURCE:
        if not found:
            raise InputError(f"{DATA_ENV}={root} holds no HAM10000 folder and no ISIC 2020 CSV.")
        label = st.sidebar.selectbox("Dataset", list(found), key="explorer_dataset")
        return load_path(found[label])
    if choice == PATH_SOURCE:
        typed = st.sidebar.text_input(f"HAM10000 folder, or a metadata CSV, inside {root}", key="explorer_path",
                                      help="Relative to that folder, or a full path inside it.").strip()
        return load_path(resolve_under(root, typed)) if typed else None
    if choice == UPLOAD_SOURCE:
        upload = st.sidebar.file_uploader("Metadata CSV", type=["csv"], key="explorer_upload")
        if upload is None:
            return None
        frame, cube, layout, dups = _load_upload(upload.getvalue(), upload.name)
        return Source(label=f"uploaded {upload.name}", layout=layout, cube=cube, frame=frame, duplicates=dups,
                      key=f"upload:{upload.file_id}")
    return load_stored()


def sidebar_filters(source: Source) -> eda.Filters:
    """Sex, age, site and diagnosis filters (empty = all); reset when the data source changes."""
    if st.session_state.get("explorer_loaded") != source.key:
        for key in FILTER_KEYS:
            st.session_state.pop(key, None)
        st.session_state["explorer_loaded"] = source.key
    options = eda.filter_options(source.cube)
    st.sidebar.subheader("Filters")
    st.sidebar.caption("An empty choice means all.")
    sexes = st.sidebar.multiselect("Sex", options["sex"], key="explorer_sex")
    low, high = options["age"]
    ages = st.sidebar.slider("Age (years)", low, high, (low, high), step=float(eda.AGE_BIN), key="explorer_age")
    sites = st.sidebar.multiselect("Body site", options["site"], key="explorer_site")
    dxs = st.sidebar.multiselect("Diagnosis", options["dx"], format_func=eda.class_name, key="explorer_dx")
    full_range = tuple(ages) == (low, high)
    if not full_range:
        st.sidebar.caption("Images without a recorded age are left out while the age range is narrowed.")
    return eda.Filters(sexes=tuple(sexes), sites=tuple(sites), dxs=tuple(dxs),
                       age_range=None if full_range else (float(ages[0]), float(ages[1])))
