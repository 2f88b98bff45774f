"""The data root: the one folder tree the app's pages may read datasets and image sets from.

The root is the folder the DERMO_DATA_DIR environment variable names; without it, the pages read
no folder on the server at all. A path a user types or chooses is resolved (`..` and every
symbolic link followed) before it is checked, so neither `../..`, nor a link pointing out of the
root, nor an absolute path elsewhere can lead outside it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

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
