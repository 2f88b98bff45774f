"""The default models against the targets, paired comparisons, and prediction throughput.

    python bench/bench_model.py [--data ../shared/data/ham10000] [--bootstrap 1000]

Recomputes the test outputs of weights/fusion-lite0 and weights/image-lite0 on the shared
lesion-grouped split exactly as the Predictor computes them (flip averaging, calibration and
the suggested-class rule from each card; nothing is read from the cards' metrics), and prints:
- balanced accuracy, melanoma and malignant AUROC against the targets (0.75, 0.90, 0.92);
- the expected calibration error of the malignant risk, the melanoma risk and the top class
  against 0.03;
- paired differences on the same test images with lesion-bootstrap 95% intervals: fusion vs
  image-only, fusion with vs without metadata, fusion without metadata vs image-only. An
  interval that contains 0 is a tie;
then times the default Predictor at batch 1 and batch 32.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.datasets import prepare_for_card, subset  # noqa: E402
from core.inference import Predictor  # noqa: E402
from core.model.bundle import load_bundle  # noqa: E402
from core.model.calibration import Calibration, binary_reliability, ece_from_bins, reliability_bins  # noqa: E402
from core.model.evaluate import (  # noqa: E402
    MIN_TRAININGS,
    binary_scores,
    class_indices,
    deployed_scorers,
    difference_verdict,
    eval_dataset,
    paired_difference,
    split_logits,
)

TARGETS = {"balanced_accuracy": 0.75, "melanoma_auroc": 0.90, "malignant_auroc": 0.92}
ECE_TARGET = 0.03


def outputs(name: str, data: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict]:
    """Calibrated test probabilities per view, labels, lesion ids and the card of one bundle."""
    model, card = load_bundle(config.WEIGHTS_DIR / name)
    frame, images, _ = prepare_for_card(card, data, config.SPLITS_DIR / "ham10000.csv")
    frame, images = subset(frame, images, frame["split"] == "test")
    views, labels = split_logits(model, card, eval_dataset(card, frame, images))
    calib = Calibration.from_card(card)
    return {v: calib.probs(logits) for v, logits in views.items()}, labels, frame["group_id"].to_numpy(), card


def calibration_errors(probs: np.ndarray, labels: np.ndarray, card: dict) -> dict[str, float]:
    out = {"top": ece_from_bins(reliability_bins(probs, labels))}
    for task, names in (("malignant", card["malignant"]), ("melanoma", [card["melanoma"]])):
        out[task] = ece_from_bins(binary_reliability(*binary_scores(probs, labels, class_indices(card, names))))
    return out


def quality_table(args: argparse.Namespace) -> None:
    fusion, labels, groups, card = outputs("fusion-lite0", args.data)
    image, image_labels, _, image_card = outputs("image-lite0", args.data)
    assert np.array_equal(labels, image_labels), "the two bundles were scored on different images"
    score = deployed_scorers(card, labels)
    image_score = deployed_scorers(image_card, labels)
    rows = {"fusion-lite0": (fusion["all_inputs"], score, card),
            "fusion-lite0 (metadata withheld)": (fusion["metadata_withheld"], score, card),
            "image-lite0": (image["all_inputs"], image_score, image_card)}
    every = np.arange(len(labels))
    print(f"\nTest split (lesion-grouped, {len(labels)} images), the deployed decision rule; target in brackets:")
    print(f"{'model':34s} {'bal.acc [0.75]':>15s} {'mel AUROC [0.90]':>17s} {'malig AUROC [0.92]':>19s}"
          f" {'ECE malig/mel/top [0.03]':>25s}")
    for name, (probs, s, c) in rows.items():
        values = {k: f(every, probs) for k, f in s.items()}
        marks = {k: ("ok" if values[k] >= TARGETS[k] else f"-{TARGETS[k] - values[k]:.3f}") for k in TARGETS}
        ece = calibration_errors(probs, labels, c)
        ece_text = "/".join(f"{ece[k]:.3f}" for k in ("malignant", "melanoma", "top"))
        ece_ok = "ok" if max(ece.values()) <= ECE_TARGET else "over"
        print(f"{name:34s} {values['balanced_accuracy']:8.3f} {marks['balanced_accuracy']:>6s} "
              f"{values['melanoma_auroc']:9.3f} {marks['melanoma_auroc']:>7s} {values['malignant_auroc']:10.3f} "
              f"{marks['malignant_auroc']:>8s} {ece_text:>20s} {ece_ok:>4s}")
    print("\nPaired differences on the same test images (lesion-bootstrap 95% interval; containing 0 = a tie; "
          f"between separately trained models, clear of 0 with fewer than {MIN_TRAININGS} trainings each = unconfirmed):")
    # (label, A, B, trainings behind each side: None for one model against itself)
    pairs = [("fusion (metadata given) - image-only", (fusion["all_inputs"], score), (image["all_inputs"], image_score), 1),
             ("fusion (metadata given) - fusion (withheld)", (fusion["all_inputs"], score),
              (fusion["metadata_withheld"], score), None),
             ("fusion (metadata withheld) - image-only", (fusion["metadata_withheld"], score),
              (image["all_inputs"], image_score), 1)]
    differences = []
    for label, (a, score_a), (b, score_b), trainings in pairs:
        parts = []
        for metric in TARGETS:  # each model scored with its own card's decision rule
            diff, lo, hi = paired_difference(lambda rows: score_a[metric](rows, a), lambda rows: score_b[metric](rows, b),
                                             groups, args.bootstrap)
            verdict = difference_verdict(lo, hi, trainings)
            parts.append(f"{metric} {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] {verdict}")
            differences.append({"comparison": label, "metric": metric, "difference": diff, "ci95": [lo, hi],
                                "trainings": trainings, "verdict": verdict})
        print(f"  {label:44s} " + "; ".join(parts))
    if args.json:
        args.json.write_text(json.dumps({
            "description": "Paired differences of the default bundles on the same lesion-grouped test images "
                           "(lesion bootstrap); written by python bench/bench_model.py --json",
            "n_images": len(labels), "n_lesions": int(len(set(groups))), "bootstrap": args.bootstrap,
            "bundles": {name: card_["version"] for name, card_ in (("fusion-lite0", card), ("image-lite0", image_card))},
            "differences": differences}, indent=1) + "\n")
        print(f"\nwritten: {args.json}")


def throughput(predictor: Predictor, images: list[np.ndarray], batch: int, repeats: int) -> float:
    """Median predictions per second over `repeats` runs, decoding + preprocessing included."""
    rates = []
    for r in range(repeats):
        chunk = [images[(r * batch + i) % len(images)] for i in range(batch)]
        start = time.perf_counter()
        predictor.predict_batch(chunk, [{"age": 50, "sex": "male", "site": "back"}] * batch, batch_size=batch)
        rates.append(batch / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the paired differences here (the Model performance "
                        "page reads results/paired_differences.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quality_table(args)

    predictor = Predictor.load(config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    folder = args.data / "images"
    files = sorted(folder.glob("*.jpg"))[:64] if folder.is_dir() else []
    rng = np.random.default_rng(0)
    images = [np.array(__import__("PIL.Image").Image.open(f).convert("RGB")) for f in files] or [
        rng.integers(0, 255, (150, 200, 3), dtype=np.uint8) for _ in range(64)
    ]
    throughput(predictor, images, 1, 3)  # warm-up
    print(f"\nThroughput of {predictor.name} on {torch.get_num_threads()} threads "
          f"(decode + preprocess + checks + model with flip averaging, 200x150 inputs):")
    print(f"  batch 1 : {throughput(predictor, images, 1, 30):7.1f} predictions/s")
    print(f"  batch 32: {throughput(predictor, images, 32, 5):7.1f} predictions/s")


if __name__ == "__main__":
    main()
