"""One uploaded file through the whole Diagnose pipeline, without Streamlit.

decode (JPEG/PNG/DICOM, every refusal an InputError) -> one forward pass giving the calibrated
prediction and the features of the quality and out-of-distribution checks; and, for the case
the clinician looks at, the heatmap
panels. The page, the benchmark and the tests all call these functions, so what is measured
and tested is what the clinician sees.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.clinic.audit import sha256_bytes
from core.clinic.dicom import is_dicom, read_dicom
from core.clinic.imageio import load_rgb
from core.clinic.quality import QualityReport
from core.errors import InputError
from core.explain import heatmap
from core.inference import Prediction, Predictor

log = logging.getLogger(__name__)


@dataclass
class Upload:
    """A decoded upload: the RGB image as shown (EXIF orientation applied) and any DICOM metadata."""

    filename: str
    sha256: str
    image: Image.Image
    dicom_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """An analysed upload: its preprocessed tensor, quality report and prediction."""

    upload: Upload
    tensor: torch.Tensor
    quality: QualityReport
    prediction: Prediction

    @property
    def array(self) -> np.ndarray:
        return np.asarray(self.upload.image)


def decode(data: bytes, filename: str, accepted_sites: list[str]) -> Upload:
    """Bytes of one uploaded file -> Upload, or InputError with a message for the clinician."""
    if not data:
        raise InputError(f"{filename}: the file is empty.")
    if is_dicom(data, filename):
        case = read_dicom(data, accepted_sites)
        return Upload(filename, sha256_bytes(data), case.image, case.metadata)
    return Upload(filename, sha256_bytes(data), load_rgb(data))


def analyse(predictor: Predictor, upload: Upload, age: Any = None, sex: Any = None, site: Any = None) -> Case:
    """One pass for one decoded upload: preprocess once, one forward gives the image checks'
    features and the calibrated prediction."""
    rgb = np.asarray(upload.image)
    tensor = predictor.tensor_from_rgb(rgb)
    prediction = predictor.predict_decoded([rgb], tensor[None], [{"age": age, "sex": sex, "site": site}])[0]
    return Case(upload, tensor, prediction.quality, prediction)


def cam_map(predictor: Predictor, case: Case, target: str, method: str = heatmap.DEFAULT_METHOD) -> np.ndarray:
    """The case's CAM for class code `target`, in the model's input frame, values in [0, 1]."""
    meta = predictor.meta_tensor(**case.prediction.metadata_used) if predictor.uses_metadata else None
    return heatmap.compute_cam(predictor.model, case.tensor, meta, predictor.classes.index(target), method)


def results_row(case: Case) -> dict[str, Any]:
    """One row of the several-images table (and of its CSV)."""
    p = case.prediction
    return {
        "file": case.upload.filename,
        "suggested class": p.top,
        "suggested class probability": round(p.probs[p.top], 4),
        "malignant risk": round(p.malignant, 4),
        "melanoma risk": round(p.melanoma, 4),
        "consider referral": "yes" if (p.refer_malignant or p.refer_melanoma) else "no",
        "flags": case.quality.summary,
    }


def audit_outputs(case: Case) -> dict[str, Any]:
    """What the audit log keeps of the outputs (probabilities, risks, referral flags, OOD score)."""
    p = case.prediction
    return {
        "probs": {k: round(v, 6) for k, v in p.probs.items()},
        "top": p.top,
        "malignant": round(p.malignant, 6),
        "melanoma": round(p.melanoma, 6),
        "refer_malignant": p.refer_malignant,
        "refer_melanoma": p.refer_melanoma,
        "quality": case.quality.as_dict(),
    }
