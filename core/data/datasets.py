"""Dataset loading, cleaning, lesion-grouped splits and the torch Dataset.

All loaders return one standard frame so the rest of the code never sees a dataset's own
column names:

    image_id, group_id, dx, label, melanoma, age, age_missing, sex, site, dx_type, image_path

`group_id` is the unit that must never straddle two splits: HAM10000's lesion_id, ISIC 2020's
patient_id.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, NoReturn, Union

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold
from torch.utils.data import Dataset
from tqdm import tqdm

from core.config import CLASSES, SEED
from core.data.metadata import SITE_REGION, UNKNOWN, MetadataEncoder
from core.errors import InputError

log = logging.getLogger(__name__)

HAM_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
ISIC_COLUMNS = ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "target")
HAM_IMAGE_DIRS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", ".")
SPLITS = ("train", "val", "test")
LAYOUTS: dict[str, tuple[str, ...]] = {"ham10000": HAM_COLUMNS, "isic2020": ISIC_COLUMNS}
LAYOUT_NAMES = {"ham10000": "HAM10000 metadata", "isic2020": "ISIC 2020 train.csv"}
#: Layouts people are likely to upload by mistake, recognised by a few telltale columns.
FOREIGN_LAYOUTS: dict[str, tuple[str, ...]] = {
    "the ISIC 2019 ground truth (one column per class)": ("image", "MEL", "NV", "BCC"),
    "the ISIC 2019 metadata": ("image", "age_approx", "anatom_site_general"),
    "the ISIC 2020 test.csv (it has no labels)": ("image_name", "patient_id", "anatom_site_general_challenge"),
    "the ISIC 2024 (SLICE-3D) metadata": ("isic_id", "target"),
}
CsvSource = Union[str, Path, bytes, IO[bytes]]


@dataclass
class CleaningReport:
    """What cleaning changed, for the training log and the model card."""

    rows_in: int = 0
    duplicates_dropped: int = 0
    age_imputed: int = 0
    sex_unknown: int = 0
    site_unknown: int = 0
    unreadable_images: list[str] = field(default_factory=list)
    rows_out: int = 0

    def as_dict(self) -> dict:
        return {**self.__dict__, "unreadable_images": list(self.unreadable_images)}


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(
            f"{what} is missing the column(s) {', '.join(missing)}; expected {', '.join(columns)}."
        )


def _read_csv(source: CsvSource, name: str | None = None) -> pd.DataFrame:
    """Read a CSV from a path, bytes or a binary file object (an upload), with readable errors."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"No such file: {path}")
        name = name or path.name
    else:
        name = name or "The uploaded file"
        source = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        frame = pd.read_csv(source)
    except pd.errors.EmptyDataError:
        raise InputError(f"{name} is not a readable CSV file: it is empty (no header, no data rows).") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{name} is not a readable CSV file ({exc.__class__.__name__}).") from None
    if frame.empty:
        raise InputError(f"{name} has a header but no data rows.")
    return frame


def _numeric(raw: pd.DataFrame, column: str, what: str) -> pd.Series:
    """Column as numbers; blanks become NaN, but text that is not a number is refused by name."""
    values = pd.to_numeric(raw[column], errors="coerce")
    text = raw[column].astype("string").str.strip()
    bad = values.isna() & text.notna() & (text != "") & (text.str.lower() != "nan")
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].unique()[:3])
        raise InputError(
            f"{what}: column '{column}' must hold numbers, but {int(bad.sum())} row(s) hold text such as {examples}."
        )
    return values


def detect_layout(raw: pd.DataFrame) -> str:
    """Which dataset a metadata CSV comes from ("ham10000" or "isic2020"), or a clear InputError.

    The message names the missing columns of the closest layout, or the foreign dataset the
    columns belong to, so a person knows which file to pick instead.
    """
    columns = set(map(str, raw.columns))
    for layout, required in LAYOUTS.items():
        if set(required) <= columns:
            return layout
    for name, telltale in FOREIGN_LAYOUTS.items():
        if set(telltale) <= columns:
            return _refuse(f"These columns look like {name}, which this app does not read", columns)
    best = max(LAYOUTS, key=lambda k: len(columns & set(LAYOUTS[k])))
    overlap = columns & set(LAYOUTS[best])
    if len(overlap) >= len(LAYOUTS[best]) / 2:
        missing = [c for c in LAYOUTS[best] if c not in columns]
        raise InputError(
            f"This looks like the {LAYOUT_NAMES[best]}, but it is missing the column(s) {', '.join(missing)}."
        )
    return _refuse("The columns match no dataset this app reads", columns)


def _refuse(reason: str, columns: set[str]) -> NoReturn:
    shown = ", ".join(sorted(columns)[:12]) + (", ..." if len(columns) > 12 else "")
    expected = "; ".join(f"{LAYOUT_NAMES[k]}: {', '.join(v)}" for k, v in LAYOUTS.items())
    raise InputError(f"{reason} (found: {shown}). Expected the columns of {expected}.")


def find_ham_csv(root: Path) -> Path:
    """The metadata CSV in a HAM10000 folder (this repo's layout or the Dataverse/Kaggle one)."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise InputError(f"No such folder: {root}")
    for name in ("HAM10000_metadata.csv", "HAM10000_metadata", "metadata.csv"):
        if (root / name).is_file():
            return root / name
    raise InputError(f"No HAM10000_metadata.csv in {root}.")


def _index_images(root: Path) -> dict[str, Path]:
    """Map image_id -> file for every JPEG/PNG in the known HAM10000 image folders."""
    index: dict[str, Path] = {}
    for sub in HAM_IMAGE_DIRS:
        folder = root / sub
        if folder.is_dir():
            for path in folder.iterdir():
                if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    index.setdefault(path.stem, path)
    return index


def standardise_ham(raw: pd.DataFrame, image_root: Path | None) -> pd.DataFrame:
    """HAM10000 columns -> the standard frame (no cleaning yet)."""
    _require_columns(raw, HAM_COLUMNS, "The HAM10000 metadata")
    index = _index_images(Path(image_root)) if image_root is not None else {}
    frame = pd.DataFrame(
        {
            "image_id": raw["image_id"].astype(str),
            "group_id": raw["lesion_id"].astype(str),
            "dx": raw["dx"].astype(str).str.strip().str.lower(),
            "age": _numeric(raw, "age", "The HAM10000 metadata"),
            "sex": raw["sex"],
            "site": raw["localization"],
            "dx_type": raw["dx_type"].astype(str),
        }
    )
    frame["image_path"] = frame["image_id"].map(lambda i: str(index[i]) if i in index else None)
    return frame


def standardise_isic(raw: pd.DataFrame) -> pd.DataFrame:
    """ISIC 2020 train.csv -> the standard frame; binary: dx is "mel" or "other"."""
    _require_columns(raw, ISIC_COLUMNS, "The ISIC 2020 CSV")
    target = pd.to_numeric(raw["target"], errors="coerce")
    if target.isna().any() or not target.isin([0, 1]).all():
        raise InputError("The ISIC 2020 column 'target' must hold only 0 and 1.")
    return pd.DataFrame(
        {
            "image_id": raw["image_name"].astype(str),
            "group_id": raw["patient_id"].astype(str),
            "dx": np.where(target == 1, "mel", "other"),
            "age": _numeric(raw, "age_approx", "The ISIC 2020 CSV"),
            "sex": raw["sex"],
            "site": raw["anatom_site_general_challenge"],
            "dx_type": raw.get("diagnosis", pd.Series(UNKNOWN, index=raw.index)).astype(str),
            "image_path": None,
        }
    )


def clean(frame: pd.DataFrame, classes: tuple[str, ...] | None = CLASSES) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop duplicate rows, mark missing metadata, encode labels in the fixed class order.

    Missing age stays NaN here with `age_missing` set; the encoder imputes the training median.
    """
    report = CleaningReport(rows_in=len(frame))
    out = frame.drop_duplicates(subset=["image_id"]).copy()
    report.duplicates_dropped = report.rows_in - len(out)
    out["age_missing"] = out["age"].isna()
    report.age_imputed = int(out["age_missing"].sum())
    for col in ("sex", "site"):
        values = out[col].astype("string").str.strip().str.lower()
        out[col] = values.fillna(UNKNOWN).replace({"": UNKNOWN, "nan": UNKNOWN})
    report.sex_unknown = int((out["sex"] == UNKNOWN).sum())
    report.site_unknown = int((out["site"] == UNKNOWN).sum())
    if classes is not None:
        unknown = sorted(set(out["dx"]) - set(classes))
        if unknown:
            raise InputError(f"Unknown diagnosis label(s) {unknown}; expected {list(classes)}.")
        out["label"] = out["dx"].map({c: i for i, c in enumerate(classes)}).astype(int)
    out["melanoma"] = out["dx"] == "mel"
    report.rows_out = len(out)
    return out.reset_index(drop=True), report


def load_ham10000(root: Path | str) -> tuple[pd.DataFrame, CleaningReport]:
    """Load and clean a HAM10000 folder (CSV + images/ or the two Dataverse image folders)."""
    csv = find_ham_csv(Path(root))
    frame = standardise_ham(_read_csv(csv), csv.parent)
    return clean(frame)


def load_isic2020(csv: Path | str) -> tuple[pd.DataFrame, CleaningReport]:
    """Load and clean the ISIC 2020 train.csv (metadata and melanoma labels; no images here)."""
    return clean(standardise_isic(_read_csv(Path(csv))), classes=None)


def load_metadata_csv(
    source: CsvSource, name: str | None = None, image_root: Path | None = None
) -> tuple[pd.DataFrame, CleaningReport, str]:
    """Load a metadata CSV of either dataset, telling them apart by their columns.

    For uploads and typed paths, where the user may hand over any file: returns the standard
    frame, the cleaning report and the layout ("ham10000" or "isic2020"). HAM10000 images are
    looked up under `image_root` when given (none for an upload: metadata only).
    """
    raw = _read_csv(source, name)
    layout = detect_layout(raw)
    if layout == "ham10000":
        frame, report = clean(standardise_ham(raw, image_root))
    else:
        frame, report = clean(standardise_isic(raw), classes=None)
    return frame, report, layout


# -- images -------------------------------------------------------------------------------
def read_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 array (raises OSError/ValueError if unreadable).

    `max_side` lets a JPEG decode at a reduced scale (PIL's draft mode), which makes statistics
    over thousands of full-resolution images fast; the result may be up to 2x larger than asked.
    """
    with Image.open(path) as img:
        if max_side is not None and max(img.size) > max_side:
            img.draft("RGB", (max_side, max_side))
        img.load()
        return np.array(img.convert("RGB"))


def load_images(frame: pd.DataFrame, report: CleaningReport | None = None) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Decode every row's image up front; rows whose file is missing or unreadable are dropped.

    Doing this before the first epoch means a bad file is reported in seconds, not an hour in.
    """
    keep, images, bad = [], [], []
    for i, path in enumerate(tqdm(frame["image_path"], desc="reading images", leave=False)):
        try:
            if path is None or (isinstance(path, float) and np.isnan(path)):
                raise FileNotFoundError
            images.append(read_rgb(path))
            keep.append(i)
        except (OSError, ValueError, FileNotFoundError):
            bad.append(str(frame["image_id"].iloc[i]))
    if bad:
        log.warning("Dropped %d rows with missing or unreadable images: %s", len(bad), ", ".join(bad[:20]))
    if report is not None:
        report.unreadable_images = bad
        report.rows_out = len(keep)
    return frame.iloc[keep].reset_index(drop=True), images


# -- splits -------------------------------------------------------------------------------
def make_split(frame: pd.DataFrame, seed: int, val_frac: float = 0.15, test_frac: float = 0.15) -> pd.Series:
    """Lesion-grouped, class-stratified train/val/test assignment, one label per row."""
    labels = frame["dx"].to_numpy()
    groups = frame["group_id"].to_numpy()
    if frame["group_id"].nunique() < 2 * round(1 / test_frac):
        raise InputError(f"Only {frame['group_id'].nunique()} lesions: too few for a train/val/test split.")
    split = np.full(len(frame), "train", dtype=object)
    test_folds = StratifiedGroupKFold(n_splits=round(1 / test_frac), shuffle=True, random_state=seed)
    rest, test = next(test_folds.split(np.zeros(len(frame)), labels, groups))
    split[test] = "test"
    val_folds = StratifiedGroupKFold(
        n_splits=round((1 - test_frac) / val_frac), shuffle=True, random_state=seed + 1
    )
    _, val = next(val_folds.split(np.zeros(len(rest)), labels[rest], groups[rest]))
    split[rest[val]] = "val"
    return pd.Series(split, index=frame.index, name="split")


def assert_grouped(frame: pd.DataFrame, split: pd.Series) -> None:
    """Raise if any group (lesion / patient) appears in more than one split."""
    per_group = pd.DataFrame({"g": frame["group_id"], "s": split}).groupby("g")["s"].nunique()
    leaked = per_group[per_group > 1]
    if len(leaked):
        raise InputError(f"{len(leaked)} lesion(s) sit in more than one split, e.g. {leaked.index[0]}.")


def split_sha256(path: Path | str) -> str:
    """The split file's hash, stored in a model card so evaluation can prove it uses the same split."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_or_create_split(frame: pd.DataFrame, path: Path, seed: int, create: bool = False) -> pd.Series:
    """Read the split CSV (image_id, split); only training (`create`) may write a new one, so
    every model shares it and evaluation can never silently score on a fresh split."""
    path = Path(path)
    if not path.is_file() and not create:
        raise InputError(f"The split file {path} does not exist. Evaluation uses the split the model was "
                         "trained on; give its path with --split-file.")
    if path.is_file():
        saved = pd.read_csv(path)
        _require_columns(saved, ("image_id", "split"), f"The split file {path}")
        mapping = dict(zip(saved["image_id"].astype(str), saved["split"]))
        split = frame["image_id"].map(mapping)
        if split.isna().any():
            missing = frame.loc[split.isna(), "image_id"].head(3).tolist()
            raise InputError(f"{split.isna().sum()} images are not in {path} (e.g. {missing}); delete it to resplit.")
        split = split.rename("split")
    else:
        split = make_split(frame, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Identifiers and assignments only: the dataset itself is never copied into the repo.
        pd.DataFrame({"image_id": frame["image_id"], "split": split}).to_csv(path, index=False)
        log.info("Wrote a new lesion-grouped split to %s", path)
    assert_grouped(frame, split)
    return split


# -- torch dataset ------------------------------------------------------------------------
class LesionDataset(Dataset):
    """Decoded images + encoded metadata + labels.

    `meta_dropout` withholds each metadata field independently with that probability (and all of
    them together with the same probability), and with the same probability gives only a site's
    coarse region, so the model learns what to do with unknowns and with region-only sites.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        images: list[np.ndarray],
        encoder: MetadataEncoder,
        transform: Callable[[torch.Tensor], torch.Tensor],
        meta_dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.labels = frame["label"].to_numpy()
        self.records = list(
            zip(frame["age"].where(~frame["age_missing"], None), frame["sex"], frame["site"])
        )
        self.encoder = encoder
        self.meta = encoder.encode_many(*zip(*self.records)) if len(frame) else np.zeros((0, encoder.dim))
        self.transform = transform
        self.meta_dropout = meta_dropout
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def _meta(self, i: int) -> np.ndarray:
        if self.meta_dropout <= 0:
            return self.meta[i]
        if self.rng.random() < self.meta_dropout:
            return self.encoder.unknown()
        age, sex, site = self.records[i]
        drop = self.rng.random(4) < self.meta_dropout
        if drop[3]:  # a clinician may give only the coarse region (torso, head/neck, ...)
            site = SITE_REGION.get(site, site)
        return self.encoder.encode(None if drop[0] else age, None if drop[1] else sex, None if drop[2] else site)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        return self.transform(image), torch.from_numpy(self._meta(i)).float(), int(self.labels[i])


def sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A small stratified sample (for smoke tests) keeping one row of every (split, dx) pair it can."""
    rng = np.random.default_rng(seed)
    picks: list[int] = [int(rng.choice(rows.index.to_numpy())) for _, rows in frame.groupby(["split", "dx"])]
    rest = np.setdiff1d(frame.index.to_numpy(), picks)
    picks.extend(rng.permutation(rest)[: max(0, n - len(picks))].tolist())
    return frame.loc[sorted(picks)].reset_index(drop=True)


def prepare(
    data_dir: Path | str, split_file: Path | str, seed: int, limit: int | None = None, create_split: bool = False
) -> tuple[pd.DataFrame, list[np.ndarray], CleaningReport]:
    """Load + clean HAM10000, attach the shared lesion-grouped split, decode the images.

    `limit` keeps a stratified sample of that many rows before any image is decoded, drawn with the
    project's seed whatever `seed` is: trainings with different seeds see the same images.
    """
    frame, report = load_ham10000(data_dir)
    frame["split"] = load_or_create_split(frame, Path(split_file), seed, create_split).to_numpy()
    if limit:
        frame = sample_rows(frame, limit, SEED)
    frame, images = load_images(frame, report)
    if not images:
        raise InputError(f"No readable images found under {data_dir}.")
    return frame, images, report


def prepare_for_card(
    card: dict, data_dir: Path | str, split_file: Path | str
) -> tuple[pd.DataFrame, list[np.ndarray], CleaningReport]:
    """`prepare` for scoring a trained bundle: the split file must be the one its card names
    (same sha256), so a test figure is always on the split the model never trained on."""
    expected = card.get("data", {}).get("split_sha256")
    if expected and Path(split_file).is_file() and split_sha256(split_file) != expected:
        raise InputError(f"The split file {split_file} is not the one this model was trained with (sha256 differs).")
    return prepare(data_dir, split_file, card["training"]["seed"])


def subset(frame: pd.DataFrame, images: list[np.ndarray], mask: np.ndarray | pd.Series) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """Rows (and their decoded images) where mask is true."""
    idx = np.flatnonzero(np.asarray(mask))
    return frame.iloc[idx].reset_index(drop=True), [images[i] for i in idx]


# -- locating datasets --------------------------------------------------------------------
def csv_layout(path: Path) -> str | None:
    """The layout of a CSV judged from its header alone, or None if it is neither dataset."""
    try:
        header = pd.read_csv(path, nrows=0)
        return detect_layout(header)
    except (InputError, OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError):
        return None


def find_datasets(root: Path | str) -> dict[str, Path]:
    """Datasets in a folder and its immediate subfolders, labelled for a picker.

    A HAM10000 folder is any folder holding its metadata CSV; an ISIC 2020 set is any CSV
    whose header has the train.csv columns. The scan reads headers only, so it is cheap.
    """
    root = Path(root)
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        try:
            csv = find_ham_csv(folder)
            if csv_layout(csv) == "ham10000":
                found[f"HAM10000 ({folder.name})"] = folder
        except InputError:
            pass
        for csv in sorted(folder.glob("*.csv")):
            if csv_layout(csv) == "isic2020":
                found[f"ISIC 2020 ({folder.name}/{csv.name})"] = csv
    return found
