"""Which calibration to fit: the class weights' prior shift + a temperature, or a fitted bias + a
temperature. Chosen on validation, reported on test.

    python bench/bench_calibration.py [--bundle weights/fusion-lite0] [--folds 5]

For each method: the validation NLL by lesion-grouped cross-validation inside the validation split
(fit on 4/5 of its lesions, score the held-out 1/5: the choice), then the method fitted on the
whole validation split and scored on the test split: NLL, and the expected calibration error of
the malignant risk, the melanoma risk and the top class (target <= 0.03 each), and the mean
malignant risk against the malignant share.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.datasets import subset  # noqa: E402
from core.model.calibration import METHODS, binary_reliability, ece_from_bins, fit_calibration, nll, reliability_bins  # noqa: E402
from core.model.evaluate import binary_scores, class_indices, eval_dataset, load_for_scoring, split_logits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    model, card, frame, images = load_for_scoring(args.bundle, args.data, config.SPLITS_DIR / "ham10000.csv")
    outputs = {}
    for split in ("val", "test"):
        part, part_images = subset(frame, images, frame["split"] == split)
        views, labels = split_logits(model, card, eval_dataset(card, part, part_images))
        outputs[split] = (views["all_inputs"], labels, part["group_id"].to_numpy())
    counts = np.array([card["data"]["counts"]["train"][c] for c in card["classes"]])
    weights = card["training"].get("class_weights", "none")
    mal, mel = class_indices(card, card["malignant"]), class_indices(card, [card["melanoma"]])
    val_logits, val_labels, val_groups = outputs["val"]
    test_logits, test_labels, _ = outputs["test"]
    print(f"{card['name']}: validation {len(val_labels)} images, test {len(test_labels)} images")
    print(f"{'method':12s} {'val CV NLL':>10s} {'test NLL':>9s} {'ECE malig':>10s} {'ECE mel':>8s} {'ECE top':>8s} "
          f"{'mean malig risk':>16s} {'T':>6s} {'alpha':>6s}")
    raw = torch.softmax(test_logits, 1).numpy()
    for method in ("none", *METHODS):
        held_out = []
        for fit_rows, score_rows in GroupKFold(args.folds).split(val_labels, groups=val_groups):
            if method == "none":
                probs = torch.softmax(val_logits[score_rows], 1).numpy()
            else:
                calib = fit_calibration(val_logits[fit_rows], val_labels[fit_rows], counts, weights, method)
                probs = calib.probs(val_logits[score_rows])
            held_out.append(nll(probs, val_labels[score_rows]) * len(score_rows))
        if method == "none":
            probs, temperature, alpha = raw, 1.0, 0.0
        else:
            calib = fit_calibration(val_logits, val_labels, counts, weights, method)
            probs, temperature, alpha = calib.probs(test_logits), calib.temperature, calib.alpha
        ece_mal = ece_from_bins(binary_reliability(*binary_scores(probs, test_labels, mal)))
        ece_mel = ece_from_bins(binary_reliability(*binary_scores(probs, test_labels, mel)))
        ece_top = ece_from_bins(reliability_bins(probs, test_labels))
        print(f"{method:12s} {sum(held_out) / len(val_labels):10.4f} {nll(probs, test_labels):9.4f} {ece_mal:10.3f} "
              f"{ece_mel:8.3f} {ece_top:8.3f} {binary_scores(probs, test_labels, mal)[1].mean():16.3f} "
              f"{temperature:6.3f} {alpha:6.2f}")
    print(f"malignant share on test: {np.isin(test_labels, mal).mean():.3f}; choose the lowest validation CV NLL")


if __name__ == "__main__":
    main()
