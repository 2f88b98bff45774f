"""Metadata encoder: age, sex and body site to a fixed-length float vector.

Every field may be missing. Age is scaled to [0, 1] by the card's `age_scale` and carries a
missing flag (missing age is imputed with the training median). Sex and site are one-hot with
an explicit unknown slot. Sites are encoded twice: the fine HAM10000 site and a coarse region,
so that the ISIC 2020 site names (which are coarser) map onto the same encoder: an ISIC site
sets the region and leaves the fine site unknown.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from core.errors import InputError

UNKNOWN = "unknown"
AGE_MIN, AGE_MAX = 0.0, 120.0

SEXES: tuple[str, ...] = ("female", "male")

#: HAM10000 `localization` values (without "unknown") and the coarse region each belongs to.
SITE_REGION: dict[str, str] = {
    "abdomen": "torso",
    "back": "torso",
    "chest": "torso",
    "trunk": "torso",
    "face": "head/neck",
    "scalp": "head/neck",
    "neck": "head/neck",
    "ear": "head/neck",
    "upper extremity": "upper extremity",
    "hand": "upper extremity",
    "lower extremity": "lower extremity",
    "foot": "lower extremity",
    "acral": "palms/soles",
    "genital": "oral/genital",
}
#: Coarse regions: the ISIC 2020 `anatom_site_general_challenge` vocabulary.
REGIONS: tuple[str, ...] = (
    "head/neck", "lower extremity", "oral/genital", "palms/soles", "torso", "upper extremity",
)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", UNKNOWN, "nan", "none")


@dataclass
class MetadataEncoder:
    """Turns (age, sex, site) into a vector; its state round-trips through the model card JSON."""

    sites: list[str] = field(default_factory=lambda: sorted(SITE_REGION))
    regions: list[str] = field(default_factory=lambda: list(REGIONS))
    sexes: list[str] = field(default_factory=lambda: list(SEXES))
    age_median: float = 50.0
    age_scale: float = 100.0

    @classmethod
    def fit(cls, ages: Iterable[Any]) -> "MetadataEncoder":
        """Fit the only learned statistic, the median age, on training rows."""
        known = [float(a) for a in ages if not _is_missing(a)]
        return cls(age_median=float(np.median(known)) if known else 50.0)

    # -- vocabulary -----------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        """One name per vector slot, e.g. `age`, `age_missing`, `sex_female`, `site_back`."""
        return (
            ["age", "age_missing"]
            + [f"sex_{s}" for s in [*self.sexes, UNKNOWN]]
            + [f"site_{s}" for s in [*self.sites, UNKNOWN]]
            + [f"region_{r}" for r in [*self.regions, UNKNOWN]]
        )

    @property
    def dim(self) -> int:
        return len(self.feature_names)

    @property
    def accepted_sites(self) -> list[str]:
        """Every site name `encode` accepts: fine HAM10000 sites and coarse ISIC regions."""
        return sorted({*self.sites, *self.regions})

    # -- validation -----------------------------------------------------------------------
    def check(self, age: Any = None, sex: Any = None, site: Any = None) -> tuple[float | None, str, str]:
        """Validate one record; returns (age or None, sex, site) normalised, or raises InputError."""
        norm_age: float | None = None
        if not _is_missing(age):
            try:
                norm_age = float(age)
            except (TypeError, ValueError):
                raise InputError(f"Age must be a number of years, got {age!r}.") from None
            if not AGE_MIN <= norm_age <= AGE_MAX:
                raise InputError(f"Age must be between 0 and 120 years, got {age!r}.")
        norm_sex = UNKNOWN if _is_missing(sex) else str(sex).strip().lower()
        if norm_sex not in (*self.sexes, UNKNOWN):
            raise InputError(f"Sex must be one of {', '.join([*self.sexes, UNKNOWN])}; got {sex!r}.")
        norm_site = UNKNOWN if _is_missing(site) else str(site).strip().lower()
        if norm_site not in (*self.accepted_sites, UNKNOWN):
            raise InputError(
                f"Unknown body site {site!r}. Use one of: {', '.join(self.accepted_sites)}, or leave it unknown."
            )
        return norm_age, norm_sex, norm_site

    # -- encoding -------------------------------------------------------------------------
    def encode(self, age: Any = None, sex: Any = None, site: Any = None) -> np.ndarray:
        """Encode one record (validated) as a float32 vector of length `dim`."""
        norm_age, norm_sex, norm_site = self.check(age, sex, site)
        vec = np.zeros(self.dim, dtype=np.float32)
        vec[0] = (self.age_median if norm_age is None else norm_age) / self.age_scale
        vec[1] = float(norm_age is None)
        offset = 2
        sexes = [*self.sexes, UNKNOWN]
        vec[offset + sexes.index(norm_sex)] = 1.0
        offset += len(sexes)
        sites = [*self.sites, UNKNOWN]
        fine = norm_site if norm_site in self.sites else UNKNOWN
        vec[offset + sites.index(fine)] = 1.0
        offset += len(sites)
        regions = [*self.regions, UNKNOWN]
        region = norm_site if norm_site in self.regions else SITE_REGION.get(norm_site, UNKNOWN)
        vec[offset + regions.index(region if region in self.regions else UNKNOWN)] = 1.0
        return vec

    def encode_many(self, ages: Iterable[Any], sexes: Iterable[Any], sites: Iterable[Any]) -> np.ndarray:
        """Encode columns of records into an (n, dim) float32 array."""
        rows = [self.encode(a, s, t) for a, s, t in zip(ages, sexes, sites)]
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def unknown(self) -> np.ndarray:
        """The vector for a case with no metadata at all."""
        return self.encode(None, None, None)

    # -- card round trip ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "feature_names": self.feature_names, "site_region": SITE_REGION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MetadataEncoder":
        keys = ("sites", "regions", "sexes", "age_median", "age_scale")
        missing = [k for k in keys if k not in data]
        if missing:
            raise InputError(f"The model card's metadata section lacks {', '.join(missing)}.")
        enc = cls(**{k: data[k] for k in keys})
        if "feature_names" in data and data["feature_names"] != enc.feature_names:
            raise InputError("The model card's metadata feature names do not match this encoder.")
        return enc
