"""Does Shades-of-Gray colour constancy at prediction time help a bundle? (issue 9, item 5)

    python bench/bench_colour.py [--bundle weights/fusion-lite0] [--split val|test] [--p 6]   (default val)

Shades of Gray (Finlayson & Trezzi 2004; a standard step in ISIC challenge entries) estimates the
illuminant per channel as the Minkowski p-norm of the pixels and rescales each channel so that
the illuminant becomes grey. This scores the bundle as deployed (the card's calibration, decision
rule and flip averaging) on the original images and on their colour-corrected copies, and prints
balanced accuracy, melanoma and malignant AUROC with the paired lesion-bootstrap difference
(corrected - original). It tests the correction at prediction time only, on a model trained
without it; a model trained with it is the fairer test and costs a full training run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.model.calibration import Calibration  # noqa: E402
from core.data.datasets import subset  # noqa: E402
from core.model.evaluate import (  # noqa: E402
    deployed_scorers,
    difference_verdict,
    eval_dataset,
    load_for_scoring,
    paired_difference,
    split_logits,
)


def shades_of_gray(image: np.ndarray, p: int = 6) -> np.ndarray:
    """An RGB uint8 image with its illuminant (per-channel p-norm) mapped to grey."""
    pixels = image.astype(np.float64)
    illuminant = np.power(np.mean(np.power(pixels, p), axis=(0, 1)), 1 / p)
    gain = np.linalg.norm(illuminant) / (illuminant * np.sqrt(3))
    return np.clip(pixels * gain, 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="choices are made on val")
    parser.add_argument("--p", type=int, default=6, help="Minkowski norm of Shades of Gray (6 in the ISIC literature)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    model, card, frame, images = load_for_scoring(args.bundle, args.data, config.SPLITS_DIR / "ham10000.csv")
    frame, images = subset(frame, images, frame["split"] == args.split)
    groups = frame["group_id"].to_numpy()
    calib = Calibration.from_card(card)
    probs = {}
    for name, views in (("original", images), (f"Shades of Gray p={args.p}", [shades_of_gray(i, args.p) for i in images])):
        logits, labels = split_logits(model, card, eval_dataset(card, frame, views))
        probs[name] = calib.probs(logits["all_inputs"])

    score = deployed_scorers(card, labels)
    (base_name, base), (sog_name, sog) = probs.items()
    every = np.arange(len(labels))
    print(f"{card['name']}, lesion-grouped {args.split} split ({len(labels)} images, {len(set(groups))} lesions):")
    for metric, statistic in score.items():
        diff, lo, hi = paired_difference(lambda rows: statistic(rows, sog), lambda rows: statistic(rows, base),
                                         groups, args.bootstrap)
        print(f"  {metric:18s} {base_name} {statistic(every, base):.3f}  {sog_name} {statistic(every, sog):.3f}  "
              f"difference {diff:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}): {difference_verdict(lo, hi)}")


if __name__ == "__main__":
    main()
