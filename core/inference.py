"""Predictor: the one API that the app, scripts and tests use to predict.

    predictor = Predictor.load("weights/fusion-lite0")
    result = predictor.predict(image, age=55, sex="male", site="back")
    result.probs["mel"], result.malignant, result.melanoma, result.top

Preprocessing comes from the model card (the same eval transform evaluation uses), the metadata
encoder from the card's vocabulary, and probabilities are calibrated with the card's
temperature. Every bad input raises `core.errors.InputError` with a readable message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from core.bundle import load_bundle
from core.errors import InputError
from core.imageio import ImageLike, load_rgb
from core.metadata import MetadataEncoder
from core.models import FusionNet
from core.transforms import eval_transform

__all__ = ["InputError", "Prediction", "Predictor"]


@dataclass
class Prediction:
    """Calibrated outputs for one image."""

    probs: dict[str, float]
    malignant: float
    melanoma: float
    top: str
    refer_malignant: bool
    refer_melanoma: bool
    metadata_used: dict[str, Any] = field(default_factory=dict)


class Predictor:
    """A loaded bundle with its preprocessing; thread-safe for prediction."""

    def __init__(self, model: FusionNet, card: dict[str, Any]) -> None:
        self.model = model.eval()
        self.card = card
        self.classes: list[str] = list(card["classes"])
        self.encoder = MetadataEncoder.from_dict(card["metadata"])
        spec = card["input"]
        self.transform = eval_transform(spec["size"], spec["mean"], spec["std"])
        self.temperature = float(card.get("temperature", 1.0))
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
        rgb = load_rgb(image)
        return self.transform(torch.from_numpy(np.array(rgb)).permute(2, 0, 1))

    def meta_tensor(self, age: Any = None, sex: Any = None, site: Any = None) -> torch.Tensor:
        """Validated, encoded metadata: (dim,) float."""
        return torch.from_numpy(self.encoder.encode(age, sex, site))

    # -- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, meta: torch.Tensor) -> np.ndarray:
        """Calibrated class probabilities for preprocessed batches."""
        logits = self.model(images, meta if self.uses_metadata else None)
        return torch.softmax(logits / self.temperature, dim=1).numpy()

    def _result(self, p: np.ndarray, meta: dict[str, Any]) -> Prediction:
        malignant = float(p[self._malignant_idx].sum())
        melanoma = float(p[self._melanoma_idx])
        return Prediction(
            probs={c: float(v) for c, v in zip(self.classes, p)},
            malignant=malignant,
            melanoma=melanoma,
            top=self.classes[int(p.argmax())],
            refer_malignant=malignant >= self.thresholds.get("malignant", 0.5),
            refer_melanoma=melanoma >= self.thresholds.get("melanoma", 0.5),
            metadata_used=meta,
        )

    def predict(self, image: ImageLike, age: Any = None, sex: Any = None, site: Any = None) -> Prediction:
        """Predict one image; every metadata field may be None (unknown)."""
        return self.predict_batch([image], [{"age": age, "sex": sex, "site": site}])[0]

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
            metas = [self._check_meta(metadata[i]) for i in chunk]
            x = torch.stack([self.image_tensor(images[i]) for i in chunk])
            m = torch.stack([self.meta_tensor(**meta) for meta in metas])
            results.extend(self._result(p, meta) for p, meta in zip(self.probabilities(x, m), metas))
        return results

    def _check_meta(self, record: dict[str, Any]) -> dict[str, Any]:
        unknown_keys = set(record) - {"age", "sex", "site"}
        if unknown_keys:
            raise InputError(f"Unknown metadata field(s): {', '.join(sorted(unknown_keys))}.")
        age, sex, site = self.encoder.check(record.get("age"), record.get("sex"), record.get("site"))
        return {"age": age, "sex": sex, "site": site}
