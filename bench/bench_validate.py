"""Time `core.validation.validate` on 1,000 images: the issue's target is under 2 minutes on 2 cores.

The "clinic set" is made of HAM10000 test-split images (linked, not copied, into a temporary
folder) with a label CSV in another vocabulary: long diagnosis names, "M"/"F", capitalised
sites and the lesion id as the bootstrap group, so the mapping is exercised too.

    .venv/bin/python bench/bench_validate.py [--n 1000] [--threads 2] [--bundle weights/fusion-lite0] [--table]

Prints wall-clock and CPU seconds for each stage (reading the set, loading the model, scoring,
metrics, PDF) and images per second. On a machine that is busy with other work, wall-clock time
exceeds CPU time; both are printed so the figure can be judged.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.inference import Predictor  # noqa: E402
from core.model.bundle import read_card  # noqa: E402
from core.validation import validate  # noqa: E402
from core.validation.inputs import load_set  # noqa: E402
from core.validation.report import pdf_summary, text_table  # noqa: E402

LONG_NAMES = {"akiec": "Actinic keratosis", "bcc": "Basal cell carcinoma", "bkl": "Seborrheic keratosis",
              "df": "Dermatofibroma", "mel": "Melanoma", "nv": "Melanocytic nevus", "vasc": "Vascular lesion"}


def clinic_set(ham: Path, n: int, folder: Path) -> Path:
    """n test-split images linked into `folder`, and a CSV in another vocabulary beside it."""
    meta = pd.read_csv(ham / "HAM10000_metadata.csv").merge(pd.read_csv(config.SPLITS_DIR / "ham10000.csv"), on="image_id")
    rows = meta[meta["split"] == "test"]
    rows = rows.sample(min(n, len(rows)), random_state=config.SEED)
    if len(rows) < n:  # more than the test split holds: fill from validation
        extra = meta[meta["split"] == "val"].sample(n - len(rows), random_state=config.SEED)
        rows = pd.concat([rows, extra])
    images = folder / "images"
    images.mkdir(parents=True)
    for image_id in rows["image_id"]:
        os.symlink(ham / "images" / f"{image_id}.jpg", images / f"{image_id}.jpg")
    csv = folder / "labels.csv"
    pd.DataFrame({
        "Image": rows["image_id"], "Histopathology": rows["dx"].map(LONG_NAMES), "Age": rows["age"],
        "Gender": rows["sex"].map({"male": "M", "female": "F"}).fillna(""),
        "Body Site": rows["localization"].str.title(), "Lesion ID": rows["lesion_id"],
    }).to_csv(csv, index=False)
    return csv


T = TypeVar("T")


def stage(name: str, timings: list[tuple[str, float, float]], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    timings.append((name, time.perf_counter() - wall, time.process_time() - cpu))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bundle", type=Path, default=config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--bootstrap", type=int, default=validate.N_BOOT)
    parser.add_argument("--table", action="store_true", help="also print the validation table")
    args = parser.parse_args()
    if not (args.data / "HAM10000_metadata.csv").is_file():
        raise SystemExit(f"HAM10000 not found at {args.data}")
    torch.set_num_threads(args.threads)
    timings: list = []
    with tempfile.TemporaryDirectory() as tmp:
        csv = clinic_set(args.data, args.n, Path(tmp))
        card = read_card(args.bundle)
        vset = stage("read the set (index, columns, labels)", timings, load_set, Path(tmp) / "images", csv, card)
        predictor = stage("load the model", timings, Predictor.load, args.bundle)
        scored = stage("score (decode + one forward per batch + checks)", timings, validate.score, predictor, vset)
        report = stage(f"metrics ({args.bootstrap} bootstrap resamples)", timings, validate.build_report, scored, vset,
                       card, str(args.bundle), args.bootstrap)
        stage("PDF summary", timings, pdf_summary, report)
    n = report["set"]["scored_images"]
    print(f"core.validation.validate on {n} HAM10000 test-split images, bundle {card['name']}, {args.threads} torch threads")
    print(f"{'stage':52s} {'wall s':>8s} {'CPU s':>8s}")
    for name, wall, cpu in timings:
        print(f"{name:52s} {wall:8.1f} {cpu:8.1f}")
    total_wall, total_cpu = sum(t[1] for t in timings), sum(t[2] for t in timings)
    score_wall = next(t[1] for t in timings if t[0].startswith("score"))
    print(f"{'total':52s} {total_wall:8.1f} {total_cpu:8.1f}")
    print(f"scoring: {n / score_wall:.1f} images/s wall; whole run {total_wall:.0f} s wall for {n} images "
          f"(target: under 120 s for 1,000 on 2 cores)")
    print(f"load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores; above 2 means other work shares them)")
    if args.table:
        print()
        print(text_table(report))


if __name__ == "__main__":
    main()
