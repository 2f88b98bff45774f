"""How much a heatmap depends on the class asked for: the melanoma-vs-nevus map correlation per CAM method.

    python bench/bench_cam_classes.py [--bundle weights/fusion-lite0] [--n 40]

For test-split images (melanomas and nevi alike), each pytorch-grad-cam method offered on the
Diagnose page computes the map for melanoma and for nevus, at the model's CAM layer; the median
Pearson correlation of the two maps is printed. A correlation near 1 means the map shows where
the model looks at all, not what points to one class rather than another.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.datasets import subset  # noqa: E402
from core.explain import heatmap  # noqa: E402
from core.model.evaluate import eval_dataset, load_for_scoring  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, card, frame, images = load_for_scoring(args.bundle, args.data, config.SPLITS_DIR / "ham10000.csv")
    rows = np.flatnonzero(((frame["split"] == "test") & frame["dx"].isin(["mel", "nv"])).to_numpy())
    pick = np.random.default_rng(config.SEED).choice(rows, min(args.n, len(rows)), replace=False)
    part, part_images = subset(frame, images, np.isin(np.arange(len(frame)), pick))
    dataset = eval_dataset(card, part, part_images)
    mel, nv = card["classes"].index("mel"), card["classes"].index("nv")
    print(f"{card['name']}: {len(part)} test images (mel and nv), CAM layer {model.cam_layer}")
    print(f"{'method':12s} {'median r(mel map, nv map)':>26s} {'share r > 0.9':>14s}")
    for method in heatmap.CAM_METHODS:
        corr = []
        for i in range(len(dataset)):
            image, meta, _ = dataset[i]
            meta = meta if model.meta is not None else None
            a = heatmap.compute_cam(model, image, meta, mel, method).ravel()
            b = heatmap.compute_cam(model, image, meta, nv, method).ravel()
            corr.append(np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 1.0)
        corr = np.asarray(corr)
        print(f"{method:12s} {np.median(corr):26.3f} {np.mean(corr > 0.9):14.1%}")


if __name__ == "__main__":
    main()
