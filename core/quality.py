"""Image quality and out-of-distribution checks, run before a prediction is shown.

The model was trained on 200x150 dermoscopic images that are in focus and evenly lit; its
output on anything else deserves less trust. Each check gives a flag with a sentence for the
clinician; flags warn, they never block (the clinician may still look at the output).

Default limits, from the HAM10000 images at 200x150: every training image has a mean grey
level between 67 and 218, and 99.5 % have a variance of the Laplacian (sharpness) above 8;
a 5x5 Gaussian blur of a typical image brings it to about 6. The OOD score compares the
image's backbone features with the training images' (see core.ood), using the statistics
stored in the model card.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core.ood import OODModel

log = logging.getLogger(__name__)

#: Sharpness and brightness are measured on the image scaled to this shorter side (the
#: training images' 150 px), so they do not depend on the camera's resolution.
ANALYSIS_SIDE = 150


@dataclass(frozen=True)
class QualityLimits:
    min_side: int = 120
    min_sharpness: float = 8.0
    min_brightness: float = 50.0
    max_brightness: float = 230.0


@dataclass
class QualityReport:
    """Measurements, the flags raised (short codes) and one sentence per flag."""

    width: int
    height: int
    sharpness: float
    brightness: float
    ood_score: float | None = None
    ood_threshold: float | None = None
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags

    @property
    def summary(self) -> str:
        """`ok` or the flags joined by commas: one cell of the results table and the audit log."""
        return ", ".join(self.flags) if self.flags else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "width": self.width, "height": self.height, "sharpness": round(self.sharpness, 2),
            "brightness": round(self.brightness, 2), "ood_score": self.ood_score,
            "ood_threshold": self.ood_threshold, "flags": list(self.flags),
        }


def _grey(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = ANALYSIS_SIDE / min(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian: low when the image is out of focus or motion-blurred."""
    return float(cv2.Laplacian(_grey(rgb), cv2.CV_64F).var())


def brightness(rgb: np.ndarray) -> float:
    """Mean grey level, 0-255."""
    return float(_grey(rgb).mean())


def check_image(image: Image.Image | np.ndarray, limits: QualityLimits = QualityLimits()) -> QualityReport:
    """Size, focus and exposure checks on a decoded RGB image."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    height, width = rgb.shape[:2]
    report = QualityReport(width, height, sharpness(rgb), brightness(rgb))
    if min(width, height) < limits.min_side:
        report.flags.append("too small")
        report.messages.append(
            f"The image is only {width} x {height} pixels; below {limits.min_side} px on its shorter side "
            "detail is lost. Upload the original dermoscopic image if you can."
        )
    if report.sharpness < limits.min_sharpness:
        report.flags.append("blurry")
        report.messages.append(
            f"The image looks out of focus (sharpness {report.sharpness:.1f}, expected at least "
            f"{limits.min_sharpness:.0f}). Please retake it in focus."
        )
    if report.brightness < limits.min_brightness:
        report.flags.append("too dark")
        report.messages.append(f"The image is very dark (mean brightness {report.brightness:.0f} of 255).")
    elif report.brightness > limits.max_brightness:
        report.flags.append("too bright")
        report.messages.append(f"The image is very bright or overexposed (mean brightness {report.brightness:.0f} of 255).")
    return report


def ood_model(card: dict[str, Any]) -> OODModel | None:
    """The card's OOD statistics, or None when the model has none (the check is then skipped)."""
    return OODModel.from_dict(card["ood"]) if "ood" in card else None


def check_distribution(report: QualityReport, features: np.ndarray, ood: OODModel) -> QualityReport:
    """Add the OOD score of one image's pooled features (D,) to `report`, flagging it above the threshold."""
    score = float(ood.score(features)[0])
    report.ood_score, report.ood_threshold = round(score, 4), round(ood.threshold, 4)
    if score > ood.threshold:
        report.flags.append("unlike training images")
        report.messages.append(
            f"This image is unlike the dermoscopic images the model was trained on (distance score {score:.2f}, "
            f"threshold {ood.threshold:.2f}). It may not be a dermoscopic image of a skin lesion, or it comes "
            "from a different camera or population; the output may be unreliable."
        )
    return report


class ImageChecks:
    """Every check a bundle's card defines, run on one decoded image and its pooled features.

    Built once per loaded model (the card's statistics are decoded once), then `assess` runs
    on the features the prediction's own forward pass produced: no second pass.
    """

    def __init__(self, card: dict[str, Any], limits: QualityLimits = QualityLimits()) -> None:
        self.ood = ood_model(card)
        self.limits = limits

    def assess(self, rgb: np.ndarray, features: np.ndarray) -> QualityReport:
        report = check_image(rgb, self.limits)
        if self.ood is not None:
            check_distribution(report, features, self.ood)
        return report
