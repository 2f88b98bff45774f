"""The default models against the foundation targets, and prediction throughput on this machine.

    python bench/bench_model.py [--data ../shared/data/ham10000] [--bootstrap 1000]

Recomputes the test metrics of weights/fusion-lite0 and weights/image-lite0 on the shared
lesion-grouped split with `core.evaluate` (nothing is read from the cards), prints them against
the targets (balanced accuracy >= 0.75, melanoma AUROC >= 0.90, malignant AUROC >= 0.92, fusion
better than image-only), then times the default Predictor at batch 1 and batch 32.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.evaluate import main as evaluate_main  # noqa: E402
from core.inference import Predictor  # noqa: E402

TARGETS = {"balanced_accuracy": 0.75, "melanoma_auroc": 0.90, "malignant_auroc": 0.92}


def headline(metrics: dict) -> dict[str, float]:
    return {
        "balanced_accuracy": metrics["balanced_accuracy"],
        "melanoma_auroc": metrics["melanoma"]["auroc"],
        "malignant_auroc": metrics["malignant"]["auroc"],
    }


def evaluate(bundle: Path, data: Path, n_boot: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "metrics.json"
        evaluate_main(["--bundle", str(bundle), "--data", str(data), "--bootstrap", str(n_boot), "--json", str(out)])
        return json.loads(out.read_text())


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = {}
    for name in ("fusion-lite0", "image-lite0"):
        metrics = evaluate(config.WEIGHTS_DIR / name, args.data, args.bootstrap)
        rows[name] = headline(metrics["all_inputs"])
        if "metadata_withheld" in metrics:
            rows[f"{name} (metadata withheld)"] = headline(metrics["metadata_withheld"])

    print("\nTest split (lesion-grouped), target in brackets:")
    print(f"{'model':34s} {'bal.acc [0.75]':>15s} {'mel AUROC [0.90]':>17s} {'malig AUROC [0.92]':>19s}")
    for name, row in rows.items():
        marks = {k: ("ok" if row[k] >= TARGETS[k] else f"short by {TARGETS[k] - row[k]:.3f}") for k in TARGETS}
        print(f"{name:34s} {row['balanced_accuracy']:8.3f} {marks['balanced_accuracy']:>6s} "
              f"{row['melanoma_auroc']:9.3f} {marks['melanoma_auroc']:>7s} {row['malignant_auroc']:10.3f} {marks['malignant_auroc']:>8s}")
    fusion, image = rows["fusion-lite0"], rows["image-lite0"]
    for k in TARGETS:
        print(f"fusion - image-only, {k}: {fusion[k] - image[k]:+.3f}")

    predictor = Predictor.load(config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    folder = args.data / "images"
    files = sorted(folder.glob("*.jpg"))[:64] if folder.is_dir() else []
    rng = np.random.default_rng(0)
    images = [np.array(__import__("PIL.Image").Image.open(f).convert("RGB")) for f in files] or [
        rng.integers(0, 255, (150, 200, 3), dtype=np.uint8) for _ in range(64)
    ]
    throughput(predictor, images, 1, 3)  # warm-up
    print(f"\nThroughput of {predictor.name} on {torch.get_num_threads()} threads "
          f"(decode + preprocess + model, 200x150 inputs):")
    print(f"  batch 1 : {throughput(predictor, images, 1, 30):7.1f} predictions/s")
    print(f"  batch 32: {throughput(predictor, images, 32, 5):7.1f} predictions/s")


if __name__ == "__main__":
    main()
