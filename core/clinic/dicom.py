"""DICOM uploads: the image as RGB, and age, sex and body site from the tags where present.

Dermoscopy in DICOM (the ISIC archive's export, DICOM's VL Photographic / Dermoscopic
Photography IODs) is 8-bit RGB or YBR. The pixel count is checked from the header before
any pixel is decoded (a decompression bomb is refused there), and everything that is not an
8-bit single-frame image is refused with a readable message, as for PNG/JPEG.
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from core.clinic.imageio import MAX_PIXELS, load_rgb
from core.errors import InputError

log = logging.getLogger(__name__)

#: DICOM BodyPartExamined / anatomic-region words -> HAM10000 sites or ISIC regions.
SITE_SYNONYMS: dict[str, str] = {
    "arm": "upper extremity", "upper arm": "upper extremity", "forearm": "upper extremity",
    "upper limb": "upper extremity", "shoulder": "upper extremity", "elbow": "upper extremity",
    "wrist": "upper extremity", "finger": "hand",
    "leg": "lower extremity", "lower limb": "lower extremity", "thigh": "lower extremity",
    "knee": "lower extremity", "lower leg": "lower extremity", "ankle": "lower extremity", "toe": "foot",
    "head": "head/neck", "head and neck": "head/neck", "cheek": "face", "nose": "face", "forehead": "face",
    "thorax": "chest", "breast": "chest", "torso": "torso", "anterior torso": "torso", "posterior torso": "back",
    "palm": "palms/soles", "sole": "palms/soles", "palms/soles": "palms/soles",
    "genitals": "genital", "oral/genital": "oral/genital",
}
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def is_dicom(data: bytes, filename: str = "") -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble; bare datasets are named .dcm."""
    return data[128:132] == b"DICM" or filename.lower().endswith((".dcm", ".dicom"))


@dataclass
class DicomCase:
    image: Image.Image
    age: float | None
    sex: str | None
    site: str | None

    @property
    def metadata(self) -> dict[str, Any]:
        """Only the fields the tags gave."""
        return {k: v for k, v in (("age", self.age), ("sex", self.sex), ("site", self.site)) if v is not None}


def parse_age(value: Any) -> float | None:
    """DICOM AS ('045Y', '006M') -> years; None when absent or malformed."""
    match = _AGE.match(str(value or "").strip().upper())
    return round(int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)], 1) if match else None


def parse_sex(value: Any) -> str | None:
    return {"F": "female", "M": "male"}.get(str(value or "").strip().upper())


def parse_site(candidates: list[str], accepted: list[str]) -> str | None:
    """The first tag value that names an accepted site, directly or by synonym."""
    for raw in candidates:
        text = re.sub(r"[_\s]+", " ", str(raw or "")).strip().lower()
        for name in (text, SITE_SYNONYMS.get(text)):
            if name and name in accepted:
                return name
    return None


def _site_candidates(ds: Any) -> list[str]:
    values = [ds.get("BodyPartExamined", "")]
    for item in ds.get("AnatomicRegionSequence", []) or []:
        values.append(item.get("CodeMeaning", ""))
    return [v for v in values if v]


def _pixels(ds: Any) -> np.ndarray:
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise InputError(
            f"The DICOM image declares {cols} x {rows} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels accepted."
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError("This DICOM file holds several frames; please upload a single dermoscopic image.")
    if int(ds.get("BitsAllocated", 8)) != 8:
        raise InputError(
            f"This DICOM image has {ds.get('BitsAllocated')}-bit samples. Please export it as an 8-bit colour image."
        )
    if "PixelData" not in ds:
        raise InputError("This DICOM file holds no image.")
    try:
        pixels = ds.pixel_array  # pydicom converts YBR colour to RGB
    except Exception as exc:  # pydicom raises many types for damaged or unsupported pixel data
        raise InputError(
            f"The DICOM image could not be decoded ({exc.__class__.__name__}); it may be damaged or use an "
            "unsupported compression."
        ) from None
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        pixels = 255 - pixels
    return np.ascontiguousarray(pixels.astype(np.uint8, copy=False))


def read_dicom(data: bytes, accepted_sites: list[str]) -> DicomCase:
    """Decode a DICOM upload; raises InputError for anything that is not a usable 8-bit image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not data:
        raise InputError("The uploaded file is empty.")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not data[128:132] == b"DICM")
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"This file is not a readable DICOM file ({exc.__class__.__name__}).") from None
    image = load_rgb(_pixels(ds))
    case = DicomCase(
        image=image,
        age=parse_age(ds.get("PatientAge")),
        sex=parse_sex(ds.get("PatientSex")),
        site=parse_site(_site_candidates(ds), accepted_sites),
    )
    log.info("DICOM read: %dx%d, tags %s", image.width, image.height, sorted(case.metadata))
    return case
