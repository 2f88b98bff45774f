"""Exploratory data analysis: the numbers behind the Dataset explorer's charts (drawn by core.figures.eda).

Every chart is built in two steps, a table function (a small DataFrame a test can check) and a
figure function (plotly, drawn from that table only). The tables accept either the standard
frame (one row per image) or a *count cube* (`to_cube`: one row per distinct combination of
dx, sex, site, age and dx_type, with its image count in `n`). The cube is what the embedded
dataset statistics store, so a machine without the dataset draws the same charts, and it is
also why filter changes are fast: 10,000 images collapse to about 1,000 cells.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from core.config import CLASS_NAMES, CLASSES, MALIGNANT, MELANOMA
from core.data.metadata import UNKNOWN

CUBE_COLUMNS = ("dx", "sex", "site", "age", "dx_type")
AGE_BIN = 5
BENIGN, MALIGNANT_LABEL = "benign", "malignant"
CHANNEL_COLOURS = {"red": "#D62728", "green": "#2CA02C", "blue": "#1F77B4"}
EXTRA_CLASS_NAMES = {"other": "Other (not melanoma; ISIC 2020)"}
#: HAM10000's confirmation-type codes in words (ISIC 2020's diagnoses, kept in their place, are words already).
DX_TYPE_NAMES = {"histo": "histopathology", "follow_up": "follow-up", "consensus": "expert consensus",
                 "confocal": "confocal microscopy"}

#: One line under each chart saying what it shows.
CAPTIONS: dict[str, str] = {
    "classes": "Images per diagnosis, with the share of all images; red bars are malignant or pre-malignant classes.",
    "sex": "Images per recorded sex of the patient.",
    "malignancy_by_sex": "Benign and malignant images for each sex (the percentage is within that sex).",
    "sites": "Share of images taken at each body site.",
    "site_sex": "Number of {target} images at each body site, split by sex.",
    "age": "Images per 5-year age band (rows without an age are left out).",
    "age_by_group": "Age bands as a percentage of benign and of malignant images, so the two shapes compare despite "
    "very different group sizes.",
    "age_by_sex": "Images per 5-year age band for each sex.",
    "colour": "Share of pixels at each red, green and blue intensity, averaged over benign and over malignant images.",
    "dx_type": "How each diagnosis was confirmed (histopathology, follow-up, expert consensus, confocal microscopy).",
    "lesions": "Lesions by how many images they have: images of one lesion are near-duplicates, which is why "
    "train/validation/test splits must be grouped by lesion.",
}


# -- shared helpers ---------------------------------------------------------------------
def group_of(dx: pd.Series) -> pd.Series:
    """"malignant" for malignant / pre-malignant diagnoses (ISIC 2020's "mel" too), else "benign"."""
    return pd.Series(np.where(dx.isin(MALIGNANT), MALIGNANT_LABEL, BENIGN), index=dx.index)


def class_name(dx: str) -> str:
    return CLASS_NAMES.get(dx, EXTRA_CLASS_NAMES.get(dx, dx))


def dx_type_name(dx_type: str) -> str:
    """How a diagnosis was confirmed, in words; the code is kept for values not in HAM10000's list."""
    return DX_TYPE_NAMES.get(dx_type, dx_type)


def _weights(df: pd.DataFrame) -> pd.Series:
    """Image count per row: 1 for the standard frame, `n` for a cube."""
    return df["n"] if "n" in df.columns else pd.Series(1, index=df.index, dtype="int64")


def _count(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    counted = df.assign(n=_weights(df)).groupby(by, dropna=False, sort=False)["n"].sum()
    return counted.reset_index(name="count").astype({"count": "int64"})


def _percent(counts: pd.DataFrame, within: list[str] | None = None) -> pd.Series:
    total = counts.groupby(within)["count"].transform("sum") if within else counts["count"].sum()
    return (100.0 * counts["count"] / total).fillna(0.0)


def _dx_order(values: pd.Series) -> list[str]:
    present = set(values)
    return [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))


def to_cube(frame: pd.DataFrame) -> pd.DataFrame:
    """Collapse the standard frame into counts per (dx, sex, site, age, dx_type) cell."""
    return _count(frame[list(CUBE_COLUMNS)], list(CUBE_COLUMNS)).rename(columns={"count": "n"})


# -- filters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    """Sidebar filters; an empty tuple means "all". Rows with no recorded age are kept only
    while the age range is None (the slider spans every age), because they have no age to test."""

    sexes: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    dxs: tuple[str, ...] = ()
    age_range: tuple[float, float] | None = None


def apply_filters(df: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """Rows (images or cube cells) that pass every filter."""
    keep = pd.Series(True, index=df.index)
    for column, allowed in (("sex", filters.sexes), ("site", filters.sites), ("dx", filters.dxs)):
        if allowed:
            keep &= df[column].isin(allowed)
    if filters.age_range is not None:
        low, high = filters.age_range
        keep &= df["age"].between(low, high)
    return df[keep]


def filter_options(df: pd.DataFrame) -> dict[str, list]:
    """Choices for the sidebar widgets: values present, most frequent first, and the age span."""
    by_count = {c: _count(df, [c]).sort_values("count", ascending=False)[c].tolist() for c in ("sex", "site")}
    ages = df["age"].dropna()
    low = float(np.floor(ages.min() / AGE_BIN) * AGE_BIN) if len(ages) else 0.0
    high = float(np.ceil(ages.max() / AGE_BIN) * AGE_BIN) if len(ages) else 0.0
    return {**by_count, "dx": _dx_order(df["dx"]), "age": [low, max(high, low + AGE_BIN)]}


# -- tables -------------------------------------------------------------------------------
def class_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 1: images per diagnosis (dx, name, group, count, percent) in the model's class order."""
    counts = _count(df, ["dx"]).set_index("dx").reindex(_dx_order(df["dx"])).reset_index()
    counts["name"] = counts["dx"].map(class_name)
    counts["group"] = group_of(counts["dx"])
    counts["percent"] = _percent(counts)
    return counts[["dx", "name", "group", "count", "percent"]]


def sex_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 2: images per sex (sex, count, percent)."""
    counts = _count(df, ["sex"]).sort_values("count", ascending=False, ignore_index=True)
    counts["percent"] = _percent(counts)
    return counts


def malignancy_by_sex_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 3: benign/malignant images per sex (sex, group, count, percent within sex)."""
    counts = _count(df.assign(group=group_of(df["dx"])), ["sex", "group"])
    counts["percent"] = _percent(counts, ["sex"])
    return counts.sort_values(["sex", "group"], ignore_index=True)


def site_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 4: images per body site (site, count, percent), most frequent first."""
    counts = _count(df, ["site"]).sort_values("count", ascending=False, ignore_index=True)
    counts["percent"] = _percent(counts)
    return counts


def site_sex_table(df: pd.DataFrame, target: str = "melanoma") -> pd.DataFrame:
    """Chart 5: melanoma (or all malignant) images per body site and sex (site, sex, count)."""
    mask = df["dx"] == MELANOMA if target == "melanoma" else df["dx"].isin(MALIGNANT)
    counts = _count(df[mask], ["site", "sex"])
    order = counts.groupby("site")["count"].sum().sort_values(ascending=False).index
    counts["site"] = pd.Categorical(counts["site"], categories=list(order))
    return counts.sort_values(["site", "sex"], ignore_index=True).astype({"site": str})


def age_table(df: pd.DataFrame, by: str | None = None, width: int = AGE_BIN) -> pd.DataFrame:
    """Charts 6-8: images per age band (age_bin = lower edge, label, [by], count, percent).

    `by` is None, "group" (benign/malignant) or "sex"; the percentage is within each `by` value,
    over the images with a recorded age.
    """
    known = df[df["age"].notna()]
    known = known.assign(age_bin=(np.floor(known["age"] / width) * width).astype(int))
    if by == "group":
        known = known.assign(group=group_of(known["dx"]))
    keys = ["age_bin"] + ([by] if by else [])
    counts = _count(known, keys).sort_values(keys, ignore_index=True)
    counts["label"] = counts["age_bin"].map(lambda a: f"{a}-{a + width - 1}")
    counts["percent"] = _percent(counts, [by] if by else None)
    return counts[["age_bin", "label", *keys[1:], "count", "percent"]]


def dx_type_table(df: pd.DataFrame) -> pd.DataFrame:
    """Chart 10a: how each diagnosis was confirmed (dx, name, dx_type, confirmed by, count, percent within dx)."""
    counts = _count(df, ["dx", "dx_type"])
    counts["percent"] = _percent(counts, ["dx"])
    counts["name"] = counts["dx"].map(class_name)
    counts["confirmed by"] = counts["dx_type"].map(dx_type_name)
    order = {dx: i for i, dx in enumerate(_dx_order(df["dx"]))}
    counts = counts.sort_values(["dx", "count"], key=lambda s: s.map(order) if s.name == "dx" else -s,
                                ignore_index=True)
    return counts[["dx", "name", "dx_type", "confirmed by", "count", "percent"]]


def images_per_lesion(frame: pd.DataFrame) -> pd.Series:
    """Chart 10b: number of lesions (groups) having 1, 2, 3, ... images, indexed by image count."""
    per_group = frame.groupby("group_id").size()
    return per_group.value_counts().sort_index().rename_axis("images").rename("lesions")


def lesion_summary(per_lesion: pd.Series) -> dict[str, int]:
    """Lesions in total, lesions with more than one image, and the images those lesions hold."""
    images = np.asarray(per_lesion.index, dtype=int)
    lesions = per_lesion.to_numpy(dtype=int)
    multi = images > 1
    return {
        "lesions": int(lesions.sum()),
        "images": int((images * lesions).sum()),
        "multi_image_lesions": int(lesions[multi].sum()),
        "images_in_multi_image_lesions": int((images[multi] * lesions[multi]).sum()),
    }


def quality_summary(frame: pd.DataFrame, duplicates_dropped: int, unreadable: int | None) -> dict:
    """The data-quality panel's numbers, JSON-able so training can store them with the model.

    Missing values count what cleaning turned into "unknown" (sex, site), empty ages, and rows
    whose image file is absent. `unreadable` is None when the images have not been checked.
    """
    n = len(frame)
    missing = {
        "age": int(frame["age"].isna().sum()),
        "sex": int((frame["sex"] == UNKNOWN).sum()),
        "site": int((frame["site"] == UNKNOWN).sum()),
        "dx_type": int(frame["dx_type"].isin([UNKNOWN, "nan", ""]).sum()),
        "image file": int(frame["image_path"].isna().sum()),
    }
    counts = frame["dx"].value_counts()
    per_lesion = frame.groupby("group_id").size()
    return {
        "rows": n,
        "lesions": int(frame["group_id"].nunique()),
        "missing": missing,
        "duplicate_rows": int(duplicates_dropped),
        "unreadable_images": unreadable,
        "images_per_lesion_max": int(per_lesion.max()) if n else 0,
        "images_per_lesion_mean": float(per_lesion.mean()) if n else 0.0,
        "imbalance_ratio": float(counts.max() / counts.min()) if len(counts) else 0.0,
        "largest_class": str(counts.idxmax()) if len(counts) else "",
        "smallest_class": str(counts.idxmin()) if len(counts) else "",
    }


def missing_table(summary: Mapping) -> pd.DataFrame:
    """Missing values per column (column, missing, percent) from a quality summary."""
    rows = max(int(summary["rows"]), 1)
    table = pd.DataFrame(list(summary["missing"].items()), columns=["column", "missing"])
    table["percent"] = 100.0 * table["missing"] / rows
    return table


def gallery_rows(frame: pd.DataFrame, per_class: int = 3, seed: int = 0) -> pd.DataFrame:
    """A few images per diagnosis (seeded), only rows whose image file exists."""
    with_images = frame[frame["image_path"].notna()]
    picks = [
        rows.sample(n=min(per_class, len(rows)), random_state=seed)
        for _, rows in with_images.groupby("dx", sort=False)
    ]
    if not picks:
        return with_images.iloc[:0]
    out = pd.concat(picks)
    order = {dx: i for i, dx in enumerate(_dx_order(out["dx"]))}
    return out.sort_values("dx", key=lambda s: s.map(order), kind="stable")


# -- colour statistics --------------------------------------------------------------------
#: dx -> (number of images, summed per-image histograms of shape (3, bins)).
ColourSums = dict[str, tuple[int, np.ndarray]]


def colour_sums(hists: np.ndarray, ok: np.ndarray, dx: pd.Series) -> ColourSums:
    """Sum per-image channel histograms by diagnosis (images that failed to decode are skipped)."""
    dx_values = np.asarray(dx)
    sums: ColourSums = {}
    for value in _dx_order(pd.Series(dx_values[ok])):
        rows = ok & (dx_values == value)
        sums[value] = (int(rows.sum()), hists[rows].sum(axis=0))
    return sums


def colour_table(sums: ColourSums, dxs: tuple[str, ...] = ()) -> pd.DataFrame:
    """Chart 9: mean share of pixels per intensity bin (group, channel, intensity, fraction, images)."""
    records = []
    for group in (BENIGN, MALIGNANT_LABEL):
        chosen = [d for d in sums if (not dxs or d in dxs) and (d in MALIGNANT) == (group == MALIGNANT_LABEL)]
        images = sum(sums[d][0] for d in chosen)
        if not images:
            continue
        mean = sum(sums[d][1] for d in chosen) / images
        bins = mean.shape[1]
        centres = (np.arange(bins) + 0.5) * 256.0 / bins
        for c, channel in enumerate(CHANNEL_COLOURS):
            records += [(group, channel, float(x), float(v), images) for x, v in zip(centres, mean[c])]
    return pd.DataFrame(records, columns=["group", "channel", "intensity", "fraction", "images"])
