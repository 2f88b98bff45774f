"""Fit a bundle's calibration, decision rule and referral thresholds on the validation split.

    python -m core.model.calibrate --bundle weights/fusion-lite0

Training runs this at its end; the command re-fits a bundle in place (for a bundle trained
before calibration existed, or after changing how it is done). Writes the card's
"calibration" (core.model.calibration), "referral_thresholds", the input's "flip_average" and
"fit", and prints what it chose on validation. The test split is never read here.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SPLITS_DIR, WEIGHTS_DIR
from core.data.datasets import split_sha256, subset
from core.data.transforms import FITS
from core.errors import InputError
from core.model.bundle import write_card
from core.model.calibration import Calibration, balanced_accuracy, fit_calibration, nll
from core.model.evaluate import (
    binary_scores,
    class_indices,
    eval_dataset,
    extract,
    head_logits,
    load_for_scoring,
    threshold_for_sensitivity,
)
from core.model.networks import FusionNet

log = logging.getLogger(__name__)


def fit_on_validation(model: FusionNet, card: dict[str, Any], val_frame: pd.DataFrame, val_images: list[np.ndarray],
                      target_sensitivity: float = 0.90, flip_average: bool = True) -> dict[str, Any]:
    """Calibration, decision rule and referral thresholds, all from the validation split; returns the card."""
    card["input"]["flip_average"] = bool(flip_average)
    feats, meta, labels = extract(model, eval_dataset(card, val_frame, val_images), flip_average)
    logits = head_logits(model, feats, meta if model.meta is not None else None)
    counts = np.array([card["data"]["counts"]["train"][c] for c in card["classes"]])
    calib = fit_calibration(logits, labels, counts, card["training"].get("class_weights", "none"))
    probs = calib.probs(logits)
    card["calibration"] = calib.to_card()
    card.pop("temperature", None)  # the calibration section holds it now
    card["referral_thresholds"] = {}
    for task, names in (("malignant", card["malignant"]), ("melanoma", [card["melanoma"]])):
        truth, score = binary_scores(probs, labels, class_indices(card, names))
        card["referral_thresholds"][task] = {
            "threshold": threshold_for_sensitivity(truth, score, target_sensitivity),
            "how": f"highest threshold reaching {target_sensitivity:.0%} sensitivity on the validation split "
                   "(calibrated risks)",
        }
    plain = Calibration(calib.bias, calib.temperature, calib.log_prior, 0.0)
    card["calibration"]["validation"] = {
        "n_images": int(len(labels)),
        "nll_uncalibrated": nll(torch.softmax(logits, 1).numpy(), labels),
        "nll_calibrated": nll(probs, labels),
        "balanced_accuracy_argmax": balanced_accuracy(labels, plain.suggest(probs)),
        "balanced_accuracy_rule": balanced_accuracy(labels, calib.suggest(probs)),
    }
    log.info("validation: T=%.3f alpha=%.2f %s", calib.temperature, calib.alpha,
             ", ".join(f"{k}={v:.4f}" for k, v in card["calibration"]["validation"].items() if k != "n_images"))
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    parser.add_argument("--no-flip", action="store_true", help="predict on the image alone (no flip averaging)")
    parser.add_argument("--fit", default="pad", choices=list(FITS),
                        help="how an upload of another aspect ratio is fitted to the input (default: padded)")
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        model, card, frame, images = load_for_scoring(args.bundle, args.data, args.split_file)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    val_f, val_i = subset(frame, images, frame["split"] == "val")
    card["input"]["fit"] = args.fit
    card["data"].setdefault("split_sha256", split_sha256(args.split_file))
    card = fit_on_validation(model, card, val_f, val_i, args.target_sensitivity, not args.no_flip)
    write_card(card, args.bundle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
