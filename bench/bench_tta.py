"""What flip test-time averaging adds to a bundle, and which variant (the card's flip_average: the
image and its horizontal mirror, pooled features averaged, is what the Predictor uses).

    python bench/bench_tta.py [--bundle weights/fusion-lite0] [--split val|test]   (default val)

Averages the model over the image and its horizontal, vertical and double flips (logits, softmax
probabilities, or pooled image features) and prints balanced accuracy, melanoma AUROC and
malignant AUROC next to the plain model's, on the shared lesion-grouped split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.datasets import prepare_for_card, subset  # noqa: E402
from core.model.bundle import load_bundle  # noqa: E402
from core.model.calibration import Calibration  # noqa: E402
from core.model.evaluate import binary_scores, class_indices, eval_dataset  # noqa: E402

VIEWS = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "hvflip": lambda x: x.flip(-1).flip(-2),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="choices are made on val")
    args = parser.parse_args()
    model, card = load_bundle(args.bundle)
    frame, images, _ = prepare_for_card(card, args.data, config.SPLITS_DIR / "ham10000.csv")
    frame, images = subset(frame, images, frame["split"] == args.split)
    dataset = eval_dataset(card, frame, images)
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in VIEWS}
    metas, labels = [], []
    with torch.no_grad():
        for x, meta, y in DataLoader(dataset, batch_size=64):
            for name, view in VIEWS.items():
                feats[name].append(model.forward_features(view(x)))
            metas.append(meta)
            labels.append(y)
        features = {k: torch.cat(v) for k, v in feats.items()}
        meta, y = torch.cat(metas), torch.cat(labels).numpy()

        def logits(f: torch.Tensor) -> torch.Tensor:
            embedding = model.forward_meta(meta, len(f)) if model.meta is not None else None
            return model.forward_head(f, embedding)

        calib = Calibration.from_card(card)
        variants = {
            "none": logits(features["identity"]).softmax(1),
            "hflip feature average (app)": logits((features["identity"] + features["hflip"]) / 2).softmax(1),
            "logit average": torch.stack([logits(f) for f in features.values()]).mean(0).softmax(1),
            "probability average": torch.stack([logits(f).softmax(1) for f in features.values()]).mean(0),
            "feature average": logits(torch.stack(list(features.values())).mean(0)).softmax(1),
        }
    print(f"{card['name']}, lesion-grouped {args.split} split ({len(y)} images), flip TTA:")
    for name, probs in variants.items():
        p = calib.probs(torch.log(probs))  # the card's calibration on top of each variant
        mel = roc_auc_score(*binary_scores(p, y, class_indices(card, [card["melanoma"]])))
        mal = roc_auc_score(*binary_scores(p, y, class_indices(card, card["malignant"])))
        print(f"  {name:20s} balanced accuracy {balanced_accuracy_score(y, calib.suggest(p)):.3f}  "
              f"melanoma AUROC {mel:.3f}  malignant AUROC {mal:.3f}")


if __name__ == "__main__":
    main()
