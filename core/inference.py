"""Predictor: the one API that the app, scripts and tests use to predict.

    predictor = Predictor.load("weights/fusion-lite0")
    result = predictor.predict(image, age=55, sex="male", site="back")
    result.probs["mel"], result.malignant, result.melanoma, result.top

Preprocessing comes from the model card (the same eval transform evaluation uses), the metadata
encoder from the card's vocabulary, probabilities are calibrated and the suggested class chosen
as the card's "calibration" section says (core.model.calibration), and every image goes through the
card's image checks (core.clinic.quality) on the features of the same forward pass. Every bad input
raises `core.errors.InputError` with a readable message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from core.clinic.imageio import ImageLike, load_rgb
from core.clinic.quality import ImageChecks, QualityReport
from core.data.metadata import MetadataEncoder
from core.data.transforms import card_transform
from core.errors import InputError
from core.model.bundle import load_bundle
from core.model.calibration import Calibration
from core.model.concurrency import model_slot
from core.model.networks import FusionNet, image_features

__all__ = ["InputError", "Prediction", "Predictor"]


@dataclass
class Prediction:
    """Calibrated outputs for one image, with the checks its image passed or failed.

    `top` is the suggested class (the card's balanced decision rule); `most_probable` is the
    class with the largest probability. They differ when a rarer class is nearly as probable
    as a common one: the rule weighs each probability against how common its class is.
    """

    probs: dict[str, float]
    malignant: float
    melanoma: float
    top: str
    most_probable: str
    refer_malignant: bool
    refer_melanoma: bool
    metadata_used: dict[str, Any] = field(default_factory=dict)
    quality: QualityReport | None = None

    @property
    def flags(self) -> list[str]:
        """Short codes of the image checks that fired; empty when the image passed them all."""
        return list(self.quality.flags) if self.quality is not None else []


class Predictor:
    """A loaded bundle with its preprocessing, calibration and image checks; thread-safe."""

    def __init__(self, model: FusionNet, card: dict[str, Any]) -> None:
        self.model = model.eval()
        self.card = card
        self.classes: list[str] = list(card["classes"])
        self.encoder = MetadataEncoder.from_dict(card["metadata"])
        spec = card["input"]
        self.transform = card_transform(card)
        self.flip_average = bool(spec.get("flip_average", False))
        self.calibration = Calibration.from_card(card)
        self.checks = ImageChecks(card)
        self.thresholds = {k: v["threshold"] for k, v in card.get("referral_thresholds", {}).items()}
        self._malignant_idx = [self.classes.index(c) for c in card["malignant"]]
        self._melanoma_idx = self.classes.index(card["melanoma"])

    @classmethod
    def load(cls, bundle_dir: Path | str) -> "Predictor":
        return cls(*load_bundle(bundle_dir))

    @property
    def name(self) -> str:
        return str(self.card.get("name", "model"))

    @property
    def uses_metadata(self) -> bool:
        return self.model.meta is not None

    # -- preprocessing --------------------------------------------------------------------
    def image_tensor(self, image: ImageLike) -> torch.Tensor:
        """Decode and preprocess one image as the model was trained: (3, H, W) float."""
        return self.tensor_from_rgb(np.asarray(load_rgb(image)))

    def tensor_from_rgb(self, rgb: np.ndarray) -> torch.Tensor:
        """Preprocess one decoded (H, W, 3) uint8 image: (3, H, W) float."""
        return self.transform(torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1))

    def meta_tensor(self, age: Any = None, sex: Any = None, site: Any = None) -> torch.Tensor:
        """Validated, encoded metadata: (dim,) float."""
        return torch.from_numpy(self.encoder.encode(age, sex, site))

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, images: torch.Tensor, meta: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """One pass of the model: (pooled image features, calibrated probabilities) for a batch.

        With the card's flip averaging, the image and its mirror image go through the backbone
        as one batch; the features (used by the out-of-distribution check) are their mean.
        """
        with model_slot():  # one bound on concurrent model work for the whole server (core.model.concurrency)
            features = image_features(self.model, images, self.flip_average)
            embedding = self.model.forward_meta(meta, len(images)) if self.uses_metadata else None
            logits = self.model.forward_head(features, embedding)
        return features.double().numpy(), self.calibration.probs(logits)

    def probabilities(self, images: torch.Tensor, meta: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities for preprocessed batches."""
        return self.forward(images, meta)[1]

    def _result(self, p: np.ndarray, meta: dict[str, Any], quality: QualityReport | None) -> Prediction:
        malignant = float(p[self._malignant_idx].sum())
        melanoma = float(p[self._melanoma_idx])
        return Prediction(
            probs={c: float(v) for c, v in zip(self.classes, p)},
            malignant=malignant,
            melanoma=melanoma,
            top=self.classes[int(self.calibration.suggest(p))],
            most_probable=self.classes[int(p.argmax())],
            refer_malignant=malignant >= self.thresholds.get("malignant", 0.5),
            refer_melanoma=melanoma >= self.thresholds.get("melanoma", 0.5),
            metadata_used=meta,
            quality=quality,
        )

    def predict(self, image: ImageLike, age: Any = None, sex: Any = None, site: Any = None) -> Prediction:
        """Predict one image; every metadata field may be None (unknown)."""
        return self.predict_batch([image], [{"age": age, "sex": sex, "site": site}])[0]

    def predict_decoded(self, rgbs: Sequence[np.ndarray], tensors: torch.Tensor,
                        metadata: Sequence[dict[str, Any]]) -> list[Prediction]:
        """Predict already decoded and preprocessed images (one forward), checks included."""
        metas = [self.check_meta(record) for record in metadata]
        m = torch.stack([self.meta_tensor(**meta) for meta in metas])
        features, probs = self.forward(tensors, m)
        return [self._result(p, meta, self.checks.assess(rgb, f))
                for p, meta, rgb, f in zip(probs, metas, rgbs, features)]

    def predict_batch(
        self, images: Sequence[ImageLike], metadata: Sequence[dict[str, Any]] | None = None, batch_size: int = 32
    ) -> list[Prediction]:
        """Predict many images; `metadata` is one dict (age, sex, site) per image, or None."""
        metadata = list(metadata) if metadata is not None else [{}] * len(images)
        if len(metadata) != len(images):
            raise InputError(f"Got {len(images)} images but {len(metadata)} metadata records.")
        results: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = range(start, min(start + batch_size, len(images)))
            for i in chunk:
                self.check_meta(metadata[i])  # refuse bad metadata before any image is decoded
            rgbs = [np.asarray(load_rgb(images[i])) for i in chunk]
            x = torch.stack([self.tensor_from_rgb(rgb) for rgb in rgbs])
            results.extend(self.predict_decoded(rgbs, x, [metadata[i] for i in chunk]))
        return results

    def check_meta(self, record: dict[str, Any]) -> dict[str, Any]:
        """Validate one metadata record (age, sex, site; any may be missing); InputError if bad."""
        unknown_keys = set(record) - {"age", "sex", "site"}
        if unknown_keys:
            raise InputError(f"Unknown metadata field(s): {', '.join(sorted(unknown_keys))}.")
        age, sex, site = self.encoder.check(record.get("age"), record.get("sex"), record.get("site"))
        return {"age": age, "sex": sex, "site": site}
