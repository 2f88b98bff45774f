"""Dataset statistics: per-image colour histograms, and the JSON stored beside the default model.

The Dataset explorer needs the dataset to draw its charts; a fresh machine has none. So this
module writes the explorer's numbers (the count cube of `core.eda.tables`, the images-per-lesion
distribution, colour histograms per diagnosis and the data-quality summary) into
`weights/<model>/dataset_stats.json`, and the page reads that when no dataset is configured:

    python -m core.eda.dataset_stats --data ../shared/data/ham10000 \
        --split-file splits/ham10000.csv --split train --out weights/fusion-lite0/dataset_stats.json

Only aggregated counts are stored (no image, no row of the licensed CSV).
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from core.config import DATA_LICENCE, HAM10000_SOURCE
from core.data.datasets import load_ham10000, read_rgb
from core.eda.tables import CUBE_COLUMNS, ColourSums, colour_sums, images_per_lesion, quality_summary, to_cube
from core.errors import InputError

log = logging.getLogger(__name__)

STATS_FILE = "dataset_stats.json"
STATS_FORMAT = 1
COLOUR_BINS = 32
#: Images are decoded at most this size for colour statistics (JPEG draft decoding; fast).
COLOUR_MAX_SIDE = 256
#: Above this many images, colour statistics use a seeded random sample of this size.
MAX_COLOUR_IMAGES = 20_000

Progress = Callable[[int, int], None]


def colour_indices(n_rows: int, cap: int = MAX_COLOUR_IMAGES, seed: int = 0) -> np.ndarray:
    """Rows whose images enter the colour statistics: all of them, or a seeded sample of `cap`."""
    if n_rows <= cap:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=cap, replace=False))


def image_histograms(
    paths: Sequence[str | None], bins: int = COLOUR_BINS, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image red/green/blue histograms, each normalised to sum to 1, and a decoded-ok mask.

    Normalising per image makes every image count equally, whatever its resolution. Missing
    (None) and unreadable files leave a zero row and ok=False.
    """
    hists = np.zeros((len(paths), 3, bins), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    step = max(1, len(paths) // 100)
    for i, path in enumerate(paths):
        if progress is not None and i % step == 0:
            progress(i, len(paths))
        if path is None or (isinstance(path, float) and np.isnan(path)):
            continue
        try:
            image = np.ascontiguousarray(read_rgb(path, max_side=COLOUR_MAX_SIDE))
        except (OSError, ValueError, SyntaxError):
            log.warning("Unreadable image: %s", path)
            continue
        for c in range(3):
            hists[i, c] = cv2.calcHist([image], [c], None, [bins], [0, 256]).ravel()
        hists[i] /= hists[i].sum(axis=1, keepdims=True)
        ok[i] = True
    if progress is not None:
        progress(len(paths), len(paths))
    return hists, ok


# -- the stored statistics ----------------------------------------------------------------
@dataclass
class DatasetStats:
    """What the explorer needs to draw its charts without the dataset."""

    cube: pd.DataFrame
    per_lesion: pd.Series
    colour: ColourSums
    quality: dict[str, Any]
    meta: dict[str, Any]


def build_stats(frame: pd.DataFrame, duplicates_dropped: int, meta: dict[str, Any],
                progress: Progress | None = None) -> dict[str, Any]:
    """The JSON document for `frame` (a standard frame with image paths)."""
    rows = colour_indices(len(frame))
    hists, ok = image_histograms(frame["image_path"].iloc[rows].tolist(), progress=progress)
    sums = colour_sums(hists, ok, frame["dx"].iloc[rows])
    unreadable = int((~ok & frame["image_path"].iloc[rows].notna().to_numpy()).sum())
    cube = to_cube(frame)
    return {
        "format": STATS_FORMAT,
        **meta,
        "colour_images": int(ok.sum()),
        "cube": {"columns": [*CUBE_COLUMNS, "n"],
                 "data": cube.astype(object).where(cube.notna(), None).to_numpy().tolist()},
        "images_per_lesion": {str(k): int(v) for k, v in images_per_lesion(frame).items()},
        "colour": {"bins": COLOUR_BINS, "by_dx": {dx: {"images": n, "sum": s.round(6).tolist()}
                                                  for dx, (n, s) in sums.items()}},
        "quality": quality_summary(frame, duplicates_dropped, unreadable),
    }


def read_stats(path: Path | str) -> DatasetStats:
    """Parse a stored statistics file; a missing or malformed file raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No stored dataset statistics at {path}.")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != STATS_FORMAT:
            raise InputError(f"{path.name} has format {doc.get('format')!r}; this app reads format {STATS_FORMAT}.")
        cube = pd.DataFrame(doc["cube"]["data"], columns=doc["cube"]["columns"])
        cube = cube.astype({"age": float, "n": "int64"})
        per_lesion = pd.Series({int(k): int(v) for k, v in doc["images_per_lesion"].items()}, dtype="int64")
        per_lesion = per_lesion.sort_index().rename_axis("images").rename("lesions")
        colour = {dx: (int(v["images"]), np.asarray(v["sum"], dtype=np.float64))
                  for dx, v in doc["colour"]["by_dx"].items()}
        quality = doc["quality"]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path} is not a valid dataset statistics file ({exc.__class__.__name__}: {exc}).") from None
    missing = [c for c in (*CUBE_COLUMNS, "n") if c not in cube.columns]
    if missing:
        raise InputError(f"{path} lacks the column(s) {', '.join(missing)} in its count cube.")
    meta = {k: v for k, v in doc.items() if k not in ("cube", "images_per_lesion", "colour", "quality")}
    return DatasetStats(cube=cube, per_lesion=per_lesion, colour=colour, quality=quality, meta=meta)


def _select_split(frame: pd.DataFrame, split_file: Path, split: str) -> pd.DataFrame:
    """Rows of one split, read from the shared split file (never created here)."""
    if not split_file.is_file():
        raise InputError(f"No split file at {split_file}; train a model first or use --split all.")
    saved = pd.read_csv(split_file)
    mapping = dict(zip(saved["image_id"].astype(str), saved["split"]))
    chosen = frame[frame["image_id"].map(mapping) == split]
    if chosen.empty:
        raise InputError(f"No image of {split_file} is in the split {split!r}.")
    return chosen.reset_index(drop=True)


def write_stats(data: Path, out: Path, split_file: Path | None, split: str) -> dict[str, Any]:
    """Compute the statistics of a HAM10000 folder (one split, or all rows) and write them."""
    frame, report = load_ham10000(data)
    if split != "all":
        frame = _select_split(frame, Path(split_file) if split_file else Path(), split)
    meta = {
        "source": HAM10000_SOURCE,
        "licence": DATA_LICENCE,
        "layout": "ham10000",
        "rows_used": "all rows" if split == "all" else f"the {split!r} split of {Path(split_file).name}",
    }
    with tqdm(total=len(frame), desc="colour histograms", leave=False) as bar:
        doc = build_stats(frame, report.duplicates_dropped if split == "all" else 0, meta,
                          progress=lambda i, n: bar.update(i - bar.n))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)
    log.info("Wrote statistics of %d images to %s", doc["quality"]["rows"], out)
    return doc


def main(argv: list[str] | None = None) -> int:
    from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SPLITS_DIR, WEIGHTS_DIR

    p = argparse.ArgumentParser(description="Write the Dataset explorer's statistics beside a model.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000", help="HAM10000 folder")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL / STATS_FILE)
    p.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    p.add_argument("--split", default="train", choices=["train", "val", "test", "all"],
                   help="rows to describe (default: the training split the model saw)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_stats(args.data, args.out, args.split_file, args.split)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
