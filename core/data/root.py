"""The data root: the one folder tree the app's pages may read datasets and image sets from.

The root is the folder the DERMO_DATA_DIR environment variable names; without it, the pages read
no folder on the server at all. A path a user types or chooses is resolved (`..` and every
symbolic link followed) before it is checked, so neither `../..`, nor a link pointing out of the
root, nor an absolute path elsewhere can lead outside it. The same holds for what a dataset inside
the root points to: datasets found by a scan and the image files a metadata table links are kept
only if they resolve inside the root (`inside`, `confine_images`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from core.errors import InputError

log = logging.getLogger(__name__)

#: Environment variable naming the data root (CI and developers: ../shared/data).
DATA_ENV = "DERMO_DATA_DIR"


def data_root() -> Path | None:
    """The folder DERMO_DATA_DIR names, resolved; None when it is unset or not a folder."""
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    if not root.is_dir():
        log.warning("%s=%s is not a folder: no data folder is available", DATA_ENV, value)
        return None
    return root


def resolve_under(root: Path | str, path: Path | str) -> Path:
    """`path` (relative to `root`, or absolute) resolved, if it lies inside `root`; else InputError."""
    base = Path(root).expanduser().resolve()
    given = Path(path).expanduser()
    target = (base / given).resolve()
    if target.is_relative_to(base):
        return target
    lexical = Path(os.path.normpath(base / given))
    how = " through a symbolic link" if lexical.is_relative_to(base) else ""
    raise InputError(f"{path} leads outside the data folder {base}{how}: only files and folders inside it can be "
                     "read.")


def inside(root: Path | str, path: Path | str) -> bool:
    """Whether `path`, resolved (links followed), lies inside `root`."""
    return Path(path).expanduser().resolve().is_relative_to(Path(root).expanduser().resolve())


def confine_images(frame: pd.DataFrame, root: Path | str) -> pd.DataFrame:
    """`frame` with every image_path that resolves outside `root` (a linked file or folder pointing
    elsewhere) set to None: the pages never read an image from outside the data root."""
    paths = frame["image_path"]
    outside = paths.map(lambda p: pd.notna(p) and not inside(root, p)).astype(bool)
    if not outside.any():
        return frame
    log.warning("%d image files of the dataset lead outside the data folder %s: not read", int(outside.sum()), root)
    return frame.assign(image_path=paths.where(~outside, None))
