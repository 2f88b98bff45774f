"""Out-of-distribution score: how far an image's features sit from the training images'.

A Mahalanobis distance under a probabilistic PCA model of the backbone's pooled features
(Tipping & Bishop): the top `k` principal directions keep their own variances, every other
direction shares the residual ("noise") variance. That is the exact Mahalanobis distance
for the PPCA covariance, so it also catches images whose features leave the principal
subspace, while storing only the means, k directions and k+1 variances (JSON, base64 float32).

It is class-conditional (Lee et al., NeurIPS 2018): one mean per diagnosis, one shared PPCA
model of the spread around them, and the score is the distance to the *nearest* class. A single
mean sits among the nevi (two thirds of the data), so with it every vascular lesion looked
unusual: a pooled 99 % threshold flagged 10 % of the test split's vascular lesions and 4 % of
its akiec, against 0.3 % of nevi. The threshold is per class too: the lowest at which no
diagnosis has more than `max_rate` of its validation images flagged.

    python -m core.clinic.ood --bundle weights/fusion-lite0 --data ../shared/data/ham10000

fits on the training split, sets the threshold on the validation split's scores (held-out
images, so the threshold is not flattered by fitting), and writes both into the card under
"ood". The flag it raises is a caution ("unusual image"), never a refusal: telling dermoscopy
from everything else is the input gate's job (core.clinic.gate).
"""
from __future__ import annotations

import argparse
import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA

from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SPLITS_DIR, WEIGHTS_DIR
from core.errors import InputError
from core.model.bundle import load_bundle, read_card, write_card

log = logging.getLogger(__name__)

ENCODING = "base64 little-endian float32, row-major"


def pack_array(array: np.ndarray) -> dict[str, Any]:
    """An array as JSON: its shape and base64 float32 bytes (compact, exact enough for a card)."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(data.shape), "data": base64.b64encode(data.tobytes()).decode("ascii")}


def unpack_array(blob: dict[str, Any]) -> np.ndarray:
    """The inverse of `pack_array`, as float64."""
    return np.frombuffer(base64.b64decode(blob["data"]), dtype="<f4").reshape(blob["shape"]).astype(np.float64)


def per_class_quantile(scores: np.ndarray, labels: np.ndarray | None, max_rate: float) -> float:
    """The lowest threshold at which no class has more than `max_rate` of its `scores` above it.

    Per class, not pooled: a pooled quantile is set by the common classes and lets the rare
    ones (vascular lesions, 1.4 % of the data) be flagged ten times as often. With one image
    in a hundred allowed and fewer than a hundred images in a class, it is that class's highest
    score. Without labels, the pooled quantile.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.zeros(len(scores)) if labels is None else np.asarray(labels)
    return float(max(np.quantile(scores[labels == c], 1 - max_rate, method="higher") for c in np.unique(labels)))


@dataclass
class OODModel:
    """Class-conditional PPCA Mahalanobis scorer; `score` is sqrt(d^2 / dim) to the nearest class
    mean, about 1 for a typical training image."""

    means: np.ndarray  # (m, D): one row per class, or one row when fitted without labels
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,)
    noise_variance: float
    threshold: float = float("inf")

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 10, labels: np.ndarray | None = None) -> "OODModel":
        """Fit on training features (n, D) and, when given, their classes (n,): one mean per
        class, one PPCA model of the features' spread around their own class mean."""
        features = np.asarray(features, dtype=np.float64)
        labels = np.zeros(len(features)) if labels is None else np.asarray(labels)
        classes, which = np.unique(labels, return_inverse=True)
        means = np.stack([features[which == i].mean(axis=0) for i in range(len(classes))])
        k = max(1, min(k, features.shape[0] - 1, features.shape[1]))
        pca = PCA(n_components=k, svd_solver="full").fit(features - means[which])
        noise = float(pca.noise_variance_) if pca.noise_variance_ > 0 else float(pca.explained_variance_[-1])
        return cls(means, pca.components_, pca.explained_variance_, max(noise, 1e-12))

    def score(self, features: np.ndarray) -> np.ndarray:
        """One score per row of `features` (n, D); larger is further from every class's training images."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if features.shape[1] != self.means.shape[1]:
            raise InputError(
                f"The OOD statistics expect {self.means.shape[1]} features, the model gives {features.shape[1]}."
            )
        return np.min([self._distance(features - mean) for mean in self.means], axis=0)

    def _distance(self, centred: np.ndarray) -> np.ndarray:
        z = centred @ self.components.T
        residual = np.maximum((centred**2).sum(axis=1) - (z**2).sum(axis=1), 0.0)
        d2 = (z**2 / self.variances).sum(axis=1) + residual / self.noise_variance
        return np.sqrt(d2 / centred.shape[1])

    def calibrate(self, features: np.ndarray, quantile: float = 0.99, labels: np.ndarray | None = None) -> float:
        """Set the threshold so that at least `quantile` of these (held-out, in-distribution) images
        pass, in every class when their `labels` are given."""
        self.threshold = per_class_quantile(self.score(features), labels, 1 - quantile)
        return self.threshold

    def to_dict(self, how: str = "") -> dict[str, Any]:
        return {
            "method": "Mahalanobis distance to the nearest class mean under probabilistic PCA of the pooled image features",
            "how": how,
            "encoding": ENCODING,
            "threshold": self.threshold,
            "noise_variance": self.noise_variance,
            "means": pack_array(self.means),
            "components": pack_array(self.components),
            "variances": pack_array(self.variances),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OODModel":
        """Read a card's section; a card fitted before the class means has one "mean"."""
        try:
            return cls(
                np.atleast_2d(unpack_array(data["means"] if "means" in data else data["mean"])),
                unpack_array(data["components"]),
                unpack_array(data["variances"]),
                float(data["noise_variance"]),
                float(data["threshold"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"The model card's 'ood' section is unreadable ({exc.__class__.__name__}).") from None


@torch.no_grad()
def image_features(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Pooled backbone features (n, D) for preprocessed images (no flip averaging; tests and benchmarks)."""
    model.eval()
    return model.forward_features(images).reshape(images.shape[0], -1).double().numpy()


def main(argv: list[str] | None = None) -> int:
    from core.data.datasets import prepare_for_card, subset
    from core.model.evaluate import eval_dataset, extract, flip_average

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--quantile", type=float, default=0.99,
                        help="share of every class's validation images that must pass")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per split (a quick check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    model, card = load_bundle(args.bundle)
    frame, images, _ = prepare_for_card(card, args.data, args.split_file)
    feats, labels = {}, {}
    for split in ("train", "val"):
        mask = (frame["split"] == split).to_numpy()
        if args.limit and mask.sum() > args.limit:
            keep = np.random.default_rng(card["training"]["seed"]).choice(np.flatnonzero(mask), args.limit, replace=False)
            mask = np.isin(np.arange(len(frame)), keep)
        part, part_images = subset(frame, images, mask)
        # the features the Predictor's forward gives: flip-averaged when the card says so
        feats[split] = extract(model, eval_dataset(card, part, part_images), flip_average(card))[0].double().numpy()
        labels[split] = part["dx"].to_numpy()
        log.info("%s: %d images", split, len(part))
    ood = OODModel.fit(feats["train"], args.components, labels["train"])
    ood.calibrate(feats["val"], args.quantile, labels["val"])
    how = (
        f"class means and a shared PPCA ({len(ood.variances)} components) of the spread around them, fitted on the "
        f"{len(feats['train'])} training-split images; threshold = the largest per-class {args.quantile:.0%} quantile "
        f"of the {len(feats['val'])} validation-split images' scores"
    )
    card = read_card(args.bundle)  # re-read: another step may have rewritten the card meanwhile
    card["ood"] = ood.to_dict(how)
    write_card(card, args.bundle)
    log.info("OOD threshold %.3f written to %s (%s)", ood.threshold, args.bundle, how)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
