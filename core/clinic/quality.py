"""Image checks run before a prediction is shown, and the graded outcome they lead to.

The model was trained on 200x150 dermoscopic images that are in focus, evenly lit and in
colour; its output on anything else deserves less trust, and on something that is not
dermoscopy at all it means nothing. Each check raises a flag (a short code) with one sentence
for the clinician, and every flag has a grade; the report's grade is its most severe one:

- "not dermoscopy": the input gate (core.clinic.gate) says this is not a dermoscopic image; the
  result is withheld;
- "unusual image": a dermoscopic image unlike the training images (core.clinic.ood); shown with a
  caution;
- "poor quality": too small, blurry, too dark or bright, or without colour; shown with the
  reason.

Default limits, from the HAM10000 images at 200x150: every training image has a mean grey
level between 67 and 218, and 99.5 % have a variance of the Laplacian (sharpness) above 8;
a 5x5 Gaussian blur of a typical image brings it to about 6. Every HAM10000 image has a mean
chroma (max minus min channel) of at least 5 of 255, and over 99.9 % above 11; a greyscale
image has 0. The gate and the OOD statistics are stored in the model card.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core.clinic.gate import Gate, at_analysis_size
from core.clinic.ood import OODModel

log = logging.getLogger(__name__)

#: Grades from best to worst; a report's grade is the worst of its flags'.
OK, POOR_QUALITY, UNUSUAL, NOT_DERMOSCOPY = "ok", "poor quality", "unusual image", "not dermoscopy"
GRADES: tuple[str, ...] = (OK, POOR_QUALITY, UNUSUAL, NOT_DERMOSCOPY)

#: The grade of every flag code a check can raise.
FLAG_GRADES: dict[str, str] = {
    "too small": POOR_QUALITY,
    "blurry": POOR_QUALITY,
    "too dark": POOR_QUALITY,
    "too bright": POOR_QUALITY,
    "greyscale": POOR_QUALITY,
    "unlike training images": UNUSUAL,
    "not dermoscopy": NOT_DERMOSCOPY,
}


@dataclass(frozen=True)
class QualityLimits:
    min_side: int = 120
    min_sharpness: float = 8.0
    min_brightness: float = 50.0
    max_brightness: float = 230.0
    min_colourfulness: float = 4.0


@dataclass
class QualityReport:
    """Measurements, the flags raised (short codes) and one sentence per flag."""

    width: int
    height: int
    sharpness: float
    brightness: float
    colourfulness: float = 0.0
    ood_score: float | None = None
    ood_threshold: float | None = None
    gate_score: float | None = None
    gate_threshold: float | None = None
    flags: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def add(self, flag: str, message: str) -> None:
        """Raise `flag` (a code of FLAG_GRADES) with its sentence for the clinician."""
        if flag not in FLAG_GRADES:
            raise ValueError(f"unknown quality flag {flag!r}")
        self.flags.append(flag)
        self.messages.append(message)

    @property
    def ok(self) -> bool:
        return not self.flags

    @property
    def grade(self) -> str:
        """The worst grade among the flags: ok, poor quality, unusual image or not dermoscopy."""
        return max((FLAG_GRADES[f] for f in self.flags), key=GRADES.index, default=OK)

    @property
    def withheld(self) -> bool:
        """True when the result must not be shown: the image is not dermoscopy."""
        return self.grade == NOT_DERMOSCOPY

    @property
    def summary(self) -> str:
        """`ok` or the flags joined by commas: one cell of the results table and the audit log."""
        return ", ".join(self.flags) if self.flags else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "width": self.width, "height": self.height, "sharpness": round(self.sharpness, 2),
            "brightness": round(self.brightness, 2), "colourfulness": round(self.colourfulness, 2),
            "ood_score": self.ood_score, "ood_threshold": self.ood_threshold,
            "gate_score": self.gate_score, "gate_threshold": self.gate_threshold,
            "grade": self.grade, "withheld": self.withheld, "flags": list(self.flags),
        }


def _grey(rgb: np.ndarray) -> np.ndarray:
    return at_analysis_size(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian: low when the image is out of focus or motion-blurred."""
    return float(cv2.Laplacian(_grey(rgb), cv2.CV_64F).var())


def brightness(rgb: np.ndarray) -> float:
    """Mean grey level, 0-255."""
    return float(_grey(rgb).mean())


def colourfulness(rgb: np.ndarray) -> float:
    """Mean chroma (largest minus smallest channel), 0-255: about 0 for a greyscale image,
    whose colour the model cannot read although it relies on it (a greyscale copy of a nevus
    moved its melanoma risk tenfold)."""
    wide = at_analysis_size(rgb).astype(np.int16)
    return float((wide.max(axis=2) - wide.min(axis=2)).mean())


def check_image(image: Image.Image | np.ndarray, limits: QualityLimits = QualityLimits()) -> QualityReport:
    """Size, focus, exposure and colour checks on a decoded RGB image."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    height, width = rgb.shape[:2]
    report = QualityReport(width, height, sharpness(rgb), brightness(rgb), colourfulness(rgb))
    if min(width, height) < limits.min_side:
        report.add("too small",
                   f"The image is only {width} x {height} pixels; below {limits.min_side} px on its shorter side "
                   "detail is lost. Upload the original dermoscopic image if you can.")
    if report.sharpness < limits.min_sharpness:
        report.add("blurry",
                   f"The image looks out of focus (sharpness {report.sharpness:.1f}, expected at least "
                   f"{limits.min_sharpness:.0f}). Please retake it in focus.")
    if report.brightness < limits.min_brightness:
        report.add("too dark", f"The image is very dark (mean brightness {report.brightness:.0f} of 255).")
    elif report.brightness > limits.max_brightness:
        report.add("too bright",
                   f"The image is very bright or overexposed (mean brightness {report.brightness:.0f} of 255).")
    if report.colourfulness < limits.min_colourfulness:
        report.add("greyscale",
                   f"The image has almost no colour (mean chroma {report.colourfulness:.1f} of 255, every training "
                   "image has at least 5). The model relies on colour, so its risks may be unreliable: upload the "
                   "original colour image.")
    return report


def ood_model(card: dict[str, Any]) -> OODModel | None:
    """The card's OOD statistics, or None when the model has none (the check is then skipped)."""
    return OODModel.from_dict(card["ood"]) if "ood" in card else None


def gate_model(card: dict[str, Any]) -> Gate | None:
    """The card's input gate, or None when the model has none (the check is then skipped)."""
    return Gate.from_dict(card["gate"]) if "gate" in card else None


def check_gate(report: QualityReport, rgb: np.ndarray, features: np.ndarray, gate: Gate) -> QualityReport:
    """Add the gate's score of one image (decoded RGB and pooled features (D,)) to `report`,
    flagging it as not dermoscopy above the gate's threshold."""
    score = gate.score_image(features, rgb)
    report.gate_score, report.gate_threshold = round(score, 4), round(gate.threshold, 4)
    if score > gate.threshold:
        report.add("not dermoscopy",
                   f"This does not look like a dermoscopic image of a skin lesion (gate score {score:.2f}, "
                   f"threshold {gate.threshold:.2f}), so the model's output would mean nothing and is withheld. "
                   "Upload an image taken through a dermatoscope.")
    return report


def check_distribution(report: QualityReport, features: np.ndarray, ood: OODModel) -> QualityReport:
    """Add the OOD score of one image's pooled features (D,) to `report`, flagging it above the threshold."""
    score = float(ood.score(features)[0])
    report.ood_score, report.ood_threshold = round(score, 4), round(ood.threshold, 4)
    if score > ood.threshold:
        report.add("unlike training images",
                   f"This image is unlike the dermoscopic images the model was trained on (distance score {score:.2f}, "
                   f"threshold {ood.threshold:.2f}): it may come from another camera, clinic or population, or show "
                   "an unusual lesion. Read the output with caution.")
    return report


class ImageChecks:
    """Every check a bundle's card defines, run on one decoded image and its pooled features.

    Built once per loaded model (the card's gate and statistics are decoded once), then
    `assess` runs on the features the prediction's own forward pass produced: no second pass.
    """

    def __init__(self, card: dict[str, Any], limits: QualityLimits = QualityLimits()) -> None:
        self.gate = gate_model(card)
        self.ood = ood_model(card)
        self.limits = limits

    def assess(self, rgb: np.ndarray, features: np.ndarray) -> QualityReport:
        """The graded report for one decoded (H, W, 3) uint8 image and its pooled features (D,)."""
        report = check_image(rgb, self.limits)
        if self.gate is not None:
            check_gate(report, rgb, features, self.gate)
        if self.ood is not None:
            check_distribution(report, features, self.ood)
        return report
