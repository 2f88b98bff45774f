"""Other vocabularies -> the model's: diagnosis labels, body sites and sex as clinics write them.

A clinic's set rarely says `mel` / `nv`: PH2 says "Common Nevus", "Atypical Nevus", "Melanoma";
ISIC 2019 says "MEL", "AK", "SCC"; pathology reports say "seborrhoeic keratosis". The built-in
maps below cover the common names; a small user map (CSV or JSON, `label -> code`) overrides or
extends them. Matching ignores case, surrounding space, and the difference between spaces,
underscores and hyphens. A label that maps to nothing is never guessed: it is left out and listed.

Deliberately unmapped: squamous cell carcinoma (invasive SCC is not one of the seven HAM10000
classes; HAM10000's akiec is actinic keratosis and intraepithelial carcinoma only), and catch-all
words such as "unknown", "other" or "benign". Map them explicitly if that is what a set means.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from core.clinic.dicom import SITE_SYNONYMS
from core.data.metadata import UNKNOWN, _is_missing
from core.errors import InputError

#: Common diagnosis names -> HAM10000 codes (keys in `normalise`d form).
BUILTIN_LABELS: dict[str, str] = {
    # melanoma
    "melanoma": "mel", "malignant melanoma": "mel", "melanoma in situ": "mel", "invasive melanoma": "mel",
    "melanoma invasive": "mel", "melanoma metastasis": "mel", "lentigo maligna": "mel",
    "lentigo maligna melanoma": "mel", "superficial spreading melanoma": "mel", "nodular melanoma": "mel",
    "acral lentiginous melanoma": "mel", "acral melanoma": "mel", "mm": "mel",
    # melanocytic nevi (PH2's common and atypical nevi; ISIC's nevus subtypes)
    "nevus": "nv", "naevus": "nv", "nevi": "nv", "naevi": "nv", "melanocytic nevus": "nv",
    "melanocytic naevus": "nv", "melanocytic nevi": "nv", "common nevus": "nv", "common naevus": "nv",
    "common nevi": "nv", "benign nevus": "nv", "atypical nevus": "nv", "atypical naevus": "nv",
    "atypical nevi": "nv", "dysplastic nevus": "nv", "dysplastic naevus": "nv", "clark nevus": "nv",
    "clark's nevus": "nv", "compound nevus": "nv", "junctional nevus": "nv", "dermal nevus": "nv",
    "intradermal nevus": "nv", "congenital nevus": "nv", "blue nevus": "nv", "halo nevus": "nv",
    "combined nevus": "nv", "recurrent nevus": "nv", "spitz nevus": "nv", "reed nevus": "nv",
    "acral nevus": "nv", "mole": "nv",
    # benign keratosis-like lesions
    "benign keratosis": "bkl", "benign keratosis like lesion": "bkl", "benign keratosis like lesions": "bkl",
    "pigmented benign keratosis": "bkl", "seborrheic keratosis": "bkl", "seborrhoeic keratosis": "bkl",
    "seborrheic keratoses": "bkl", "sk": "bkl", "solar lentigo": "bkl", "lentigo": "bkl", "lentigo nos": "bkl",
    "lentigo simplex": "bkl", "lichenoid keratosis": "bkl", "lichen planus like keratosis": "bkl",
    "lplk": "bkl",
    # basal cell carcinoma
    "basal cell carcinoma": "bcc", "basal cell cancer": "bcc", "basalioma": "bcc",
    # actinic keratosis / intraepithelial carcinoma
    "actinic keratosis": "akiec", "actinic keratoses": "akiec", "solar keratosis": "akiec", "ak": "akiec",
    "bowen's disease": "akiec", "bowens disease": "akiec", "bowen disease": "akiec",
    "intraepithelial carcinoma": "akiec", "squamous cell carcinoma in situ": "akiec", "scc in situ": "akiec",
    "actinic keratosis intraepithelial carcinoma": "akiec",
    "actinic keratoses and intraepithelial carcinoma": "akiec",
    # dermatofibroma
    "dermatofibroma": "df", "dermatofibromas": "df", "fibrous histiocytoma": "df",
    # vascular lesions
    "vascular lesion": "vasc", "vascular lesions": "vasc", "angioma": "vasc", "haemangioma": "vasc",
    "hemangioma": "vasc", "cherry angioma": "vasc", "angiokeratoma": "vasc", "pyogenic granuloma": "vasc",
    "haemorrhage": "vasc", "hemorrhage": "vasc",
}

#: Sex words -> the encoder's vocabulary.
BUILTIN_SEX: dict[str, str] = {
    "f": "female", "female": "female", "woman": "female", "w": "female", "fem": "female",
    "m": "male", "male": "male", "man": "male",
}

#: Body-site words beyond the encoder's own sites and regions (DICOM's synonyms plus ISIC's).
BUILTIN_SITES: dict[str, str] = {
    **SITE_SYNONYMS,
    "lateral torso": "torso", "trunk": "trunk", "upper back": "back", "lower back": "back",
    "head neck": "head/neck", "head/neck": "head/neck", "palms soles": "palms/soles", "oral genital": "oral/genital",
    "lower extremities": "lower extremity", "upper extremities": "upper extremity", "legs": "lower extremity",
    "arms": "upper extremity", "feet": "foot", "hands": "hand", "mucosa": "oral/genital",
}


def normalise(value: Any) -> str:
    """Lower case, one space between words; '_' and '-' count as spaces: 'Atypical_Nevus' -> 'atypical nevus'."""
    return re.sub(r"[\s_\-]+", " ", str(value)).strip().lower()


def _raw(value: Any) -> str:
    """How a label is shown in the lists of unmapped labels (missing -> '(empty)')."""
    return "(empty)" if _is_missing(value) and str(value).strip().lower() != UNKNOWN else str(value).strip()


@dataclass
class LabelMap:
    """Label -> class code. `None` as a code means 'leave these out on purpose' (from a user map)."""

    classes: list[str]
    entries: dict[str, str | None] = field(default_factory=dict)
    source: str = "built-in"

    @classmethod
    def build(cls, classes: Iterable[str], class_names: Mapping[str, str] | None = None,
              user: Mapping[str, str | None] | None = None, source: str = "built-in") -> "LabelMap":
        """The built-in names, the card's own class names and codes, then the user's entries (they win)."""
        classes = list(classes)
        entries: dict[str, str | None] = {k: v for k, v in BUILTIN_LABELS.items() if v in classes}
        entries.update({normalise(name): code for code, name in (class_names or {}).items() if code in classes})
        entries.update({normalise(code): code for code in classes})
        for label, code in (user or {}).items():
            entries[normalise(label)] = code
        return cls(classes, entries, source)

    def code(self, label: Any) -> str | None:
        if _is_missing(label):
            return None
        return self.entries.get(normalise(label))

    def apply(self, labels: pd.Series) -> tuple[pd.Series, dict[str, int]]:
        """Codes for each label (None where unmapped) and the unmapped labels with their counts."""
        codes = labels.map(self.code)
        unmapped = Counter(_raw(v) for v, c in zip(labels, codes) if pd.isna(c))
        return codes, dict(unmapped.most_common())

    def mapped_fraction(self, labels: pd.Series) -> float:
        """Share of non-empty values that map to a class: how label-like a column is."""
        values = labels[~labels.map(_is_missing)]
        return float(values.map(self.code).notna().mean()) if len(values) else 0.0

    def used(self, labels: pd.Series) -> dict[str, str]:
        """The distinct labels of this set and the code each was mapped to (for the report)."""
        out: dict[str, str] = {}
        for value in pd.unique(labels):
            code = self.code(value)
            if code is not None:
                out[str(value).strip()] = code
        return out


@dataclass
class ValueMap:
    """Sex or site words -> the encoder's vocabulary; anything else becomes unknown (and is counted)."""

    accepted: list[str]
    entries: dict[str, str]

    @classmethod
    def sites(cls, accepted: Iterable[str], user: Mapping[str, str | None] | None = None) -> "ValueMap":
        accepted = list(accepted)
        entries = {k: v for k, v in BUILTIN_SITES.items() if v in accepted}
        entries.update({normalise(site): site for site in accepted})
        entries.update({normalise(site).replace("/", " "): site for site in accepted})
        for label, site in (user or {}).items():
            entries[normalise(label)] = site if site else UNKNOWN
        return cls(accepted, entries)

    @classmethod
    def sexes(cls, accepted: Iterable[str]) -> "ValueMap":
        accepted = list(accepted)
        return cls(accepted, {k: v for k, v in BUILTIN_SEX.items() if v in accepted})

    def apply(self, values: pd.Series) -> tuple[pd.Series, dict[str, int]]:
        """Mapped values (UNKNOWN where missing or unknown) and the values that could not be mapped."""
        mapped = values.map(lambda v: UNKNOWN if _is_missing(v) else self.entries.get(normalise(v)))
        unmapped = Counter(str(v).strip() for v, m in zip(values, mapped) if pd.isna(m))
        return mapped.fillna(UNKNOWN), dict(unmapped.most_common())


def read_map(source: Path | str | bytes, name: str = "") -> dict[str, str | None]:
    """A user map from a JSON object or a two-column CSV (label, code; a header row is optional).

    An empty code means "leave this label out on purpose". Raises InputError for anything else.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"No such map file: {path}")
        name, data = path.name, path.read_bytes()
    else:
        data = source
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"The map {name} is not UTF-8 text.") from None
    if name.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"The map {name} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
        if not isinstance(obj, dict) or not all(isinstance(v, (str, type(None))) for v in obj.values()):
            raise InputError(f"The JSON map {name} must be one object of \"label\": \"code\" pairs.")
        return {str(k): (v.strip() or None) if isinstance(v, str) else None for k, v in obj.items()}
    rows = [re.split(r"\s*[,;\t]\s*", line.strip(), maxsplit=1) for line in text.splitlines() if line.strip()]
    if not rows or any(len(r) != 2 for r in rows):
        bad = next((i + 1 for i, r in enumerate(rows) if len(r) != 2), 1)
        raise InputError(f"The map {name} must have two columns, label and code (line {bad} has not).")
    return {label.strip().strip('"'): (code.strip().strip('"') or None) for label, code in rows}


HEADER_WORDS = {"code", "codes", "class", "classes", "dx", "target", "to", "ham10000", "maps to", "site", "sites",
                "label", "diagnosis", "mapped"}


def load_user_map(source: Path | str | bytes, accepted: Iterable[str], what: str, name: str = "") -> dict[str, str | None]:
    """read_map + a header row dropped + every target checked against the model's vocabulary."""
    user = read_map(source, name)
    accepted = set(accepted)
    items = list(user.items())
    if items and items[0][1] is not None and items[0][1] not in accepted and normalise(items[0][1]) in HEADER_WORDS:
        items = items[1:]  # a header row such as "label,code"
    bad = sorted({str(v) for _, v in items if v is not None and v not in accepted})
    if bad:
        raise InputError(f"The {what} map names {', '.join(bad)}, which the model does not know. "
                         f"Use one of: {', '.join(sorted(accepted))} (or leave the code empty to leave a label out).")
    if not items:
        raise InputError(f"The {what} map is empty.")
    return dict(items)
