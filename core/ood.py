"""Out-of-distribution score: how far an image's features sit from the training images'.

A Mahalanobis distance under a probabilistic PCA model of the backbone's pooled features
(Tipping & Bishop): the top `k` principal directions keep their own variances, every other
direction shares the residual ("noise") variance. That is the exact Mahalanobis distance
for the PPCA covariance, so it also catches images whose features leave the principal
subspace, while storing only a mean, k directions and k+1 variances (JSON, base64 float32).

    python -m core.ood --bundle weights/fusion-lite0 --data ../shared/data/ham10000

fits on the training split, sets the threshold at a quantile of the validation split's
scores (held-out images, so the threshold is not flattered by fitting), and writes both
into the card under "ood".
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

from core.bundle import load_bundle, write_card
from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SPLITS_DIR, WEIGHTS_DIR
from core.errors import InputError

log = logging.getLogger(__name__)

ENCODING = "base64 little-endian float32, row-major"


def _pack(array: np.ndarray) -> dict[str, Any]:
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(data.shape), "data": base64.b64encode(data.tobytes()).decode("ascii")}


def _unpack(blob: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(blob["data"]), dtype="<f4").reshape(blob["shape"]).astype(np.float64)


@dataclass
class OODModel:
    """PPCA Mahalanobis scorer; `score` is sqrt(d^2 / dim), about 1 for a typical training image."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,)
    noise_variance: float
    threshold: float = float("inf")

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 10) -> "OODModel":
        """Fit on training features (n, D)."""
        features = np.asarray(features, dtype=np.float64)
        k = max(1, min(k, features.shape[0] - 1, features.shape[1]))
        pca = PCA(n_components=k, svd_solver="full").fit(features)
        noise = float(pca.noise_variance_) if pca.noise_variance_ > 0 else float(pca.explained_variance_[-1])
        return cls(pca.mean_, pca.components_, pca.explained_variance_, max(noise, 1e-12))

    def score(self, features: np.ndarray) -> np.ndarray:
        """One score per row of `features` (n, D); larger is further from the training images."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if features.shape[1] != self.mean.shape[0]:
            raise InputError(
                f"The OOD statistics expect {self.mean.shape[0]} features, the model gives {features.shape[1]}."
            )
        centred = features - self.mean
        z = centred @ self.components.T
        residual = np.maximum((centred**2).sum(axis=1) - (z**2).sum(axis=1), 0.0)
        d2 = (z**2 / self.variances).sum(axis=1) + residual / self.noise_variance
        return np.sqrt(d2 / centred.shape[1])

    def calibrate(self, features: np.ndarray, quantile: float = 0.99) -> float:
        """Set the threshold so that `quantile` of these (held-out, in-distribution) images pass."""
        self.threshold = float(np.quantile(self.score(features), quantile))
        return self.threshold

    def to_dict(self, how: str = "") -> dict[str, Any]:
        return {
            "method": "Mahalanobis distance under probabilistic PCA of the pooled image features",
            "how": how,
            "encoding": ENCODING,
            "threshold": self.threshold,
            "noise_variance": self.noise_variance,
            "mean": _pack(self.mean),
            "components": _pack(self.components),
            "variances": _pack(self.variances),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OODModel":
        try:
            return cls(
                _unpack(data["mean"]),
                _unpack(data["components"]),
                _unpack(data["variances"]),
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
    from core.data import prepare_for_card, subset
    from core.evaluate import eval_dataset, extract, flip_average

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--quantile", type=float, default=0.99, help="share of validation images that must pass")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per split (a quick check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    model, card = load_bundle(args.bundle)
    frame, images, _ = prepare_for_card(card, args.data, args.split_file)
    feats = {}
    for split in ("train", "val"):
        mask = (frame["split"] == split).to_numpy()
        if args.limit and mask.sum() > args.limit:
            keep = np.random.default_rng(card["training"]["seed"]).choice(np.flatnonzero(mask), args.limit, replace=False)
            mask = np.isin(np.arange(len(frame)), keep)
        part, part_images = subset(frame, images, mask)
        # the features the Predictor's forward gives: flip-averaged when the card says so
        feats[split] = extract(model, eval_dataset(card, part, part_images), flip_average(card))[0].double().numpy()
        log.info("%s: %d images", split, len(part))
    ood = OODModel.fit(feats["train"], args.components)
    ood.calibrate(feats["val"], args.quantile)
    how = (
        f"PPCA ({len(ood.variances)} components) fitted on the {len(feats['train'])} training-split images; "
        f"threshold = {args.quantile:.0%} quantile of the {len(feats['val'])} validation-split images' scores"
    )
    card["ood"] = ood.to_dict(how)
    write_card(card, args.bundle)
    log.info("OOD threshold %.3f written to %s (%s)", ood.threshold, args.bundle, how)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
