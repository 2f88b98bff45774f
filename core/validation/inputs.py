"""A clinic's labelled image set, read safely: folder or ZIP, label CSV, columns, ids matched to files.

Everything here refuses bad input with an InputError a person can read, and lists (never hides)
what it leaves out: ids with no image, images with no row, labels that map to nothing, values of
age, sex or site it could not read (those become unknown). Nothing here needs the model, so the
page can show the detected columns before a model is loaded.

Safety: a folder chosen on the page must lie inside the data root (`resolve_under`: `..` and
symlinks are resolved before the check, and every image found is checked again); an uploaded
ZIP is never unpacked to disk: it is checked member by member (`open_zip`: no absolute or
escaping paths, no symlinks, bounded member count, total size and compression ratio) and kept in
memory, and each image is decompressed only when it is scored, its real size counted against
the size the ZIP declares.
"""
from __future__ import annotations

import csv
import io
import logging
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.data.metadata import AGE_MAX, AGE_MIN, UNKNOWN, MetadataEncoder, _is_missing
from core.data.root import resolve_under
from core.errors import InputError
from core.validation.label_maps import LabelMap, ValueMap, normalise

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
#: Files with one of these extensions, or with none (DICOM files often have none), are indexed.
MAX_FILES = 100_000
MAX_LISTED = 200  # longest list of left-out items kept in a report (the counts are always exact)

#: ZIP limits: a clinic set of a few thousand full-resolution dermoscopic JPEGs fits easily.
ZIP_MAX_MEMBERS = 20_000
ZIP_MAX_BYTES = 4 * 2**30
ZIP_MAX_RATIO = 200  # JPEG/PNG/DICOM hardly compress; a member 200x smaller than its content is a bomb
ZIP_MAX_FILE_BYTES = 128 * 2**20  # one file read from a ZIP (in memory); a larger image is skipped and listed

ID_NAMES = ("image_id", "image", "image_name", "isic_id", "file", "filename", "file_name", "image_file",
            "path", "image_path", "img", "img_id", "name", "id")
LABEL_NAMES = ("dx", "diagnosis", "label", "labels", "class", "category", "ground_truth", "groundtruth", "gt",
               "lesion_type", "histology", "histopathology", "clinical_diagnosis", "final_diagnosis")
AGE_NAMES = ("age", "age_approx", "patient_age", "age_years")
SEX_NAMES = ("sex", "gender", "patient_sex")
SITE_NAMES = ("localization", "site", "anatom_site_general_challenge", "anatom_site_general", "anatom_site",
              "body_site", "bodysite", "location", "anatomic_site", "body_part", "body_location")
GROUP_NAMES = ("lesion_id", "lesion", "patient_id", "patient")
CONFIRMATION_NAMES = ("dx_type", "diagnosis_confirm_type", "confirmation")
ROLES = ("id", "label", "age", "sex", "site", "group")


# -- paths -----------------------------------------------------------------------------------
def list_folders(root: Path | str, max_depth: int = 3, limit: int = 500) -> list[str]:
    """Folders under `root` (relative, '.' first), not following symlinks, hidden folders skipped."""
    base = Path(root).resolve()
    out = ["."]
    for dirpath, dirnames, _ in os.walk(base):
        depth = len(Path(dirpath).relative_to(base).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        if depth >= max_depth:
            dirnames[:] = []
        for d in dirnames:
            out.append((Path(dirpath) / d).relative_to(base).as_posix())
            if len(out) >= limit:
                return out
    return out


def list_csvs(folder: Path | str, max_depth: int = 3) -> list[str]:
    """CSV files under `folder` (relative paths), shallowest first."""
    base = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        depth = len(Path(dirpath).relative_to(base).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        if depth >= max_depth:
            dirnames[:] = []
        found += [(Path(dirpath) / f).relative_to(base).as_posix() for f in filenames
                  if f.lower().endswith(".csv") and not f.startswith(".")]
    return _shallowest_first(found)


def _shallowest_first(paths: Iterable[str]) -> list[str]:
    return sorted(paths, key=lambda p: (p.count("/"), p.lower()))


# -- ZIP -------------------------------------------------------------------------------------
def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's safe relative path; None for folders and macOS metadata; InputError if it escapes."""
    name = info.filename.replace("\\", "/")
    if info.is_dir() or name.endswith("/"):
        return None
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        raise InputError(f"The ZIP contains a path that escapes its folder ({info.filename!r}); it was refused.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"The ZIP contains a symbolic link ({info.filename!r}); it was refused.")
    if path.parts[0] == "__MACOSX" or any(p.startswith("._") for p in path.parts):
        return None
    return path


def open_zip(source: bytes, name: str = "upload.zip", max_bytes: int = ZIP_MAX_BYTES,
             max_members: int = ZIP_MAX_MEMBERS, max_ratio: float = ZIP_MAX_RATIO) -> ZipSet:
    """Check every member of an uploaded ZIP, without unpacking it; InputError if refused."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(source))
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"This is not a readable ZIP file ({exc}).") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise InputError(f"The ZIP holds {len(infos):,} entries; at most {max_members:,} are accepted.")
        members = [(info, p) for info in infos if (p := _member_path(info)) is not None]
        declared = sum(info.file_size for info, _ in members)
        if declared > max_bytes:
            raise InputError(f"The ZIP would unpack to {declared / 2**20:,.0f} MB; at most "
                             f"{max_bytes / 2**20:,.0f} MB are accepted.")
        for info, _ in members:
            if info.file_size > 1_000_000 and info.file_size > max_ratio * max(info.compress_size, 1):
                raise InputError(f"The ZIP member {info.filename!r} is compressed {info.file_size // max(info.compress_size, 1)}"
                                 " times (a possible ZIP bomb); the ZIP was refused.")
        if not members:
            raise InputError("The ZIP is empty.")
    return ZipSet(Path(name).name or "upload.zip", bytes(source), {p.as_posix(): info.filename for info, p in members})


@dataclass(frozen=True)
class ZipSet:
    """A checked ZIP kept in memory: its files by safe relative path, read one at a time.

    Paths handed out (the index's files, and what `read` takes) start with the ZIP's name, so
    messages name the ZIP as they name a folder."""

    name: str
    data: bytes = field(repr=False)
    members: dict[str, str] = field(repr=False)  # safe relative path -> the member's name in the archive

    def csvs(self, max_depth: int = 3) -> list[str]:
        return _shallowest_first(p for p in self.members if p.lower().endswith(".csv")
                                 and not PurePosixPath(p).name.startswith(".") and p.count("/") < max_depth)

    def index(self) -> ImageIndex:
        files = [Path(self.name, p) for p in sorted(self.members) if _is_image_name(p)
                 and not any(part.startswith(".") for part in PurePosixPath(p).parts)]
        return _indexed(Path(self.name), files, [])

    def read(self, path: Path | str) -> bytes:
        """One file's bytes; InputError if it is not in the ZIP, too large, or cannot be decompressed. zipfile
        stops at the size the ZIP declares (which open_zip checked) and then checks the CRC, so a
        member that lies about its size is refused here."""
        relative = PurePosixPath(Path(path).as_posix()).relative_to(self.name).as_posix()
        if relative not in self.members:
            raise InputError(f"{relative} is not in the ZIP.")
        try:
            with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
                size = archive.getinfo(self.members[relative]).file_size
                if size > ZIP_MAX_FILE_BYTES:
                    raise InputError(f"it is {size / 2**20:,.0f} MB, more than the {ZIP_MAX_FILE_BYTES // 2**20} MB "
                                     "accepted for one file")
                return archive.read(self.members[relative])
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, zlib.error) as exc:
            raise InputError(f"it could not be read from the ZIP ({exc.__class__.__name__}: {exc})") from None


# -- images ----------------------------------------------------------------------------------
@dataclass
class ImageIndex:
    """The image files of a folder, findable by relative path, file name or name without extension."""

    folder: Path
    files: list[Path]
    by_key: dict[str, list[int]]
    outside_root: list[str] = field(default_factory=list)

    def lookup(self, value: str) -> list[int]:
        """Indices of the files an id names: by relative path, file name, or file name without extension."""
        key = str(value).strip().replace("\\", "/").lower()
        if not key:
            return []
        for candidate in (key, PurePosixPath(key).name):
            if candidate in self.by_key:
                return self.by_key[candidate]
        stem = PurePosixPath(key).stem if PurePosixPath(key).suffix.lower() in IMAGE_EXTENSIONS else None
        return self.by_key.get(f"stem:{key}") or (self.by_key.get(f"stem:{stem}", []) if stem else [])

    def relative(self, i: int) -> str:
        return self.files[i].relative_to(self.folder).as_posix()


def _is_image_name(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix == ""


def index_images(folder: Path | str, root: Path | str | None = None) -> ImageIndex:
    """Every image file under `folder` (recursively; symlinked folders are not followed).

    With `root`, a file whose real path lies outside it (a symlink pointing out) is left out and
    listed. Extension-less files are included (DICOM files often have no extension).
    """
    base = Path(folder)
    if not base.is_dir():
        raise InputError(f"No such image folder: {base}")
    real_root = Path(root).resolve() if root is not None else None
    files, outside = [], []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(filenames):
            if name.startswith(".") or not _is_image_name(name):
                continue
            path = Path(dirpath) / name
            if real_root is not None:
                real = path.resolve()
                if real != real_root and real_root not in real.parents:
                    outside.append(path.relative_to(base).as_posix())
                    continue
            files.append(path)
            if len(files) > MAX_FILES:
                raise InputError(f"The folder holds more than {MAX_FILES:,} files; choose a smaller folder.")
    return _indexed(base, files, outside)


def _indexed(base: Path, files: list[Path], outside: list[str]) -> ImageIndex:
    """The index of `files` (all under `base`) by relative path, file name and name without extension."""
    by_key: dict[str, list[int]] = {}
    for i, path in enumerate(files):
        rel = path.relative_to(base).as_posix().lower()
        keys = {rel, path.name.lower(), f"stem:{path.stem.lower()}" if path.suffix else f"stem:{path.name.lower()}"}
        for key in keys:
            by_key.setdefault(key, []).append(i)
    return ImageIndex(base, files, by_key, outside)


# -- the CSV ---------------------------------------------------------------------------------
def read_labels(source: Path | str | bytes, name: str = "") -> pd.DataFrame:
    """The label CSV as text columns (ids keep their leading zeros); InputError if unreadable or empty.

    Comma-separated, or semicolon / tab separated (as spreadsheets in many locales export them).
    """
    label = name or (Path(source).name if isinstance(source, (str, Path)) else "the CSV")
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise InputError(f"No such label CSV: {source}")
        source = Path(source).read_bytes()
    frame = None
    for sep in (",", ";", "\t"):
        try:
            frame = pd.read_csv(io.BytesIO(source), dtype=str, sep=sep, encoding="utf-8-sig", skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise InputError(f"{label} is empty.") from None
        except (pd.errors.ParserError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"{label} could not be read as a CSV ({str(exc).splitlines()[0][:200]}).") from None
        if frame.shape[1] > 1:
            break
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise InputError(f"{label} has a header but no rows: the set is empty.")
    return frame


# -- columns ---------------------------------------------------------------------------------
@dataclass
class Columns:
    """Which CSV column plays which role (None: absent), and how each was found."""

    id: str
    label: str
    age: str | None = None
    sex: str | None = None
    site: str | None = None
    group: str | None = None
    confirmation: str | None = None
    how: dict[str, str] = field(default_factory=dict)

    @property
    def metadata(self) -> list[str]:
        return [role for role in ("age", "sex", "site") if getattr(self, role)]


def _key(name: str) -> str:
    return normalise(name).replace(" ", "_")


def _named(frame: pd.DataFrame, names: Iterable[str], exclude: set[str] = frozenset()) -> list[str]:
    """Columns whose name is one of `names`, in the order of `names`."""
    by_key = {_key(c): c for c in frame.columns if c not in exclude}
    return [by_key[n] for n in names if n in by_key]


def _column(frame: pd.DataFrame, name: str, role: str) -> str:
    """A column named by the user (case and spacing ignored), or InputError listing the columns."""
    for column in frame.columns:
        if column == name or _key(column) == _key(name):
            return column
    raise InputError(f"The CSV has no column {name!r} for the {role}. Its columns are: {', '.join(map(str, frame.columns))}.")


def _id_matches(values: pd.Series, index: ImageIndex) -> int:
    return int(sum(1 for v in values.dropna().head(5000) if index.lookup(v)))


def detect_columns(frame: pd.DataFrame, index: ImageIndex, labels: LabelMap,
                   given: dict[str, str | None] | None = None) -> Columns:
    """Each role's column: the one the user named, else detected (ids: the column naming the most
    images; labels: a label-like name whose values map, else the column whose values map best;
    metadata and lesion/patient groups: by name). `given[role] = ""` means "none"."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    how: dict[str, str] = {}
    # the id column
    if given.get("id"):
        id_col = _column(frame, given["id"], "image ids")
        how["id"] = "given"
    else:
        scores = {c: _id_matches(frame[c], index) for c in frame.columns}
        named = _named(frame, ID_NAMES)
        best = max(frame.columns, key=lambda c: (scores[c], c in named, -list(frame.columns).index(c)))
        if scores[best] == 0:
            example = index.relative(0) if index.files else "none"
            column = named[0] if named else frame.columns[0]
            raise InputError(f"No column of the CSV names the images in {index.folder.name or index.folder}: e.g. "
                             f"column {column!r} holds {str(frame[column].iloc[0])!r}, the images are named like "
                             f"{example!r}. Name the id column with --id-col, or check the folder.")
        id_col = best
        how["id"] = f"detected ({scores[best]} of {min(len(frame), 5000)} values name an image)"
    # the label column
    taken = {id_col}
    if given.get("label"):
        label_col = _column(frame, given["label"], "labels")
        how["label"] = "given"
    else:
        named = _named(frame, LABEL_NAMES, taken)
        fractions = {c: labels.mapped_fraction(frame[c]) for c in frame.columns if c not in taken}
        candidates = [c for c in named if fractions[c] > 0]
        if candidates:
            label_col = max(candidates, key=lambda c: fractions[c])
        else:
            best = max(fractions, key=fractions.get) if fractions else None
            if best is None or fractions[best] < 0.5:
                column = named[0] if named else best
                if column is None:
                    raise InputError("The CSV has only one column: it needs an image id column and a label column.")
                examples = ", ".join(repr(v) for v in pd.unique(frame[column].dropna())[:5])
                raise InputError(f"No column holds labels the model knows: e.g. {column!r} holds {examples}. "
                                 "Give a label map (label -> code) or name the label column.")
            label_col = best
        how["label"] = f"detected ({fractions[label_col]:.0%} of its values map to a class)"
    taken.add(label_col)
    roles: dict[str, str | None] = {}
    for role, names in (("age", AGE_NAMES), ("sex", SEX_NAMES), ("site", SITE_NAMES), ("group", GROUP_NAMES),
                        ("confirmation", CONFIRMATION_NAMES)):
        if role in given:
            roles[role] = _column(frame, given[role], role) if given[role] else None
            how[role] = "given" if given[role] else "none (given)"
        else:
            named = _named(frame, names, taken)
            roles[role] = named[0] if named else None
            how[role] = "detected by name" if named else "absent"
        if roles[role]:
            taken.add(roles[role])
    return Columns(id=id_col, label=label_col, how=how, **roles)


# -- the set ---------------------------------------------------------------------------------
@dataclass
class ValidationSet:
    """The rows that will be scored (id, file, label, code, metadata, group) and what was left out."""

    rows: pd.DataFrame
    columns: Columns
    folder: Path
    label_map: dict[str, str]
    problems: dict[str, Any]
    n_csv_rows: int

    @property
    def has_metadata(self) -> bool:
        return bool(self.columns.metadata)

    def describe(self) -> dict[str, Any]:
        counts = self.rows["code"].value_counts()
        return {
            "folder": str(self.folder), "csv_rows": self.n_csv_rows, "matched_rows": int(len(self.rows)),
            "columns": {role: getattr(self.columns, role) for role in (*ROLES, "confirmation")},
            "columns_how": self.columns.how,
            "classes_present": {c: int(n) for c, n in counts.sort_index().items()},
            "label_map_used": self.label_map,
            "groups": "lesion/patient column" if self.columns.group else "none: each image is its own group",
            "problems": self.problems,
        }


def _listed(values: Iterable[Any]) -> dict[str, Any]:
    values = list(values)
    return {"count": len(values), "items": [str(v) for v in values[:MAX_LISTED]]}


def _ages(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Ages in years (NaN where missing); unreadable or impossible values become unknown and are listed."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (~values.map(_is_missing)) & (numbers.isna() | (numbers < AGE_MIN) | (numbers > AGE_MAX))
    return numbers.where(~bad), [str(v) for v in values[bad]]


def build_set(frame: pd.DataFrame, index: ImageIndex, card: dict[str, Any], label_map: LabelMap,
              columns: Columns, site_map: dict[str, str | None] | None = None,
              ignore_metadata: bool = False, sample: int | None = None, seed: int = 0) -> ValidationSet:
    """Match rows to images, map labels and metadata; InputError when nothing usable is left.

    Left out and listed: rows whose label maps to nothing, ids with no image (or naming several),
    images with no row, duplicate rows of one image (identical labels: kept once). Refused: an
    image given two different labels, and a set with no usable row.
    """
    encoder = MetadataEncoder.from_dict(card["metadata"])
    n_rows = len(frame)
    problems: dict[str, Any] = {}
    ids = frame[columns.id].fillna("").astype(str).str.strip()
    codes, unmapped = label_map.apply(frame[columns.label])
    problems["unmapped_labels"] = {"count": int(sum(unmapped.values())), "labels": unmapped}
    hits = ids.map(index.lookup)
    no_image = (hits.map(len) == 0) & (ids != "")
    ambiguous = hits.map(len) > 1
    problems["ids_without_image"] = _listed(ids[no_image])
    problems["empty_ids"] = int((ids == "").sum())
    problems["ambiguous_ids"] = _listed(f"{i} ({', '.join(index.relative(j) for j in h[:3])})"
                                        for i, h in zip(ids[ambiguous], hits[ambiguous]))
    matched_any = hits[hits.map(len) == 1].map(lambda h: h[0])
    named = set(matched_any)
    problems["images_without_row"] = _listed(index.relative(i) for i in range(len(index.files)) if i not in named)
    problems["outside_data_folder"] = _listed(index.outside_root)
    keep = (hits.map(len) == 1) & codes.notna()
    rows = pd.DataFrame({
        "id": ids, "label": frame[columns.label].fillna("").astype(str).str.strip(), "code": codes,
        "file_index": hits.map(lambda h: h[0] if len(h) == 1 else -1),
    })[keep]
    # duplicates: several rows naming one image
    dup = rows[rows.duplicated("file_index", keep=False)]
    conflicts = dup.groupby("file_index")["code"].nunique()
    conflicts = conflicts[conflicts > 1]
    if len(conflicts):
        listed = [f"{index.relative(i)} ({', '.join(sorted(set(dup.loc[dup['file_index'] == i, 'label'])))})"
                  for i in conflicts.index[:20]]
        raise InputError(f"{len(conflicts)} image(s) have rows with different labels, so their truth is unclear: "
                         f"{'; '.join(listed)}. Keep one row per image and run again.")
    problems["duplicate_rows"] = _listed(dup.drop_duplicates("file_index")["id"])
    rows = rows.drop_duplicates("file_index")
    if rows.empty:
        reasons = []
        if problems["unmapped_labels"]["count"]:
            reasons.append(f"{problems['unmapped_labels']['count']} row(s) have labels that map to no class "
                           f"({', '.join(list(unmapped)[:8])}): give a label map")
        if problems["ids_without_image"]["count"]:
            reasons.append(f"{problems['ids_without_image']['count']} id(s) name no image in the folder "
                           f"(e.g. {', '.join(problems['ids_without_image']['items'][:3])})")
        raise InputError("No image can be scored: " + ("; ".join(reasons) or "the CSV matches nothing") + ".")
    if sample and sample < len(rows):
        rows = rows.sample(sample, random_state=seed).sort_index()
        problems["sampled"] = {"of": int(keep.sum()), "kept": int(sample), "seed": seed}
    source = frame.loc[rows.index]
    rows["file"] = rows["file_index"].map(lambda i: str(index.files[i]))
    rows["relative"] = rows["file_index"].map(index.relative)
    use = {role: (None if ignore_metadata else getattr(columns, role)) for role in ("age", "sex", "site")}
    if use["age"]:
        rows["age"], bad = _ages(source[use["age"]])
        problems["ages_unreadable"] = _listed(bad)
    else:
        rows["age"] = np.nan
    for role, mapper in (("sex", ValueMap.sexes(encoder.sexes)), ("site", ValueMap.sites(encoder.accepted_sites, site_map))):
        if use[role]:
            rows[role], bad = mapper.apply(source[use[role]])
            problems[f"{role}s_unknown"] = {"count": int(sum(bad.values())), "values": bad}
        else:
            rows[role] = UNKNOWN
    rows["group"] = (source[columns.group].fillna("").astype(str).str.strip() if columns.group else rows["id"])
    rows.loc[rows["group"] == "", "group"] = rows["id"]
    rows["confirmation"] = source[columns.confirmation].fillna("unknown").astype(str) if columns.confirmation else ""
    if ignore_metadata:
        columns = Columns(**{**columns.__dict__, "age": None, "sex": None, "site": None})
    return ValidationSet(rows.drop(columns="file_index").reset_index(drop=True), columns, index.folder,
                         label_map.used(frame.loc[keep[keep].index, columns.label]), problems, n_rows)


def load_set(images: Path | str | ZipSet, labels: Path | str | bytes, card: dict[str, Any],
             given: dict[str, str | None] | None = None, label_map: dict[str, str | None] | None = None,
             site_map: dict[str, str | None] | None = None, root: Path | str | None = None,
             ignore_metadata: bool = False, sample: int | None = None, labels_name: str = "") -> ValidationSet:
    """Folder (or checked ZIP) + CSV (+ maps) -> ValidationSet; with `root`, a folder and a CSV
    path must lie inside it."""
    if root is not None and not isinstance(images, ZipSet):
        images = resolve_under(root, images)
        if not isinstance(labels, bytes):
            labels = resolve_under(root, labels)
    index = images.index() if isinstance(images, ZipSet) else index_images(images, root)
    if not index.files:
        refused = (f" ({len(index.outside_root)} file(s) link to outside the data folder and were refused)"
                   if index.outside_root else "")
        kind = "The ZIP" if isinstance(images, ZipSet) else "The folder"
        raise InputError(f"{kind} {index.folder.name or index.folder} holds no image files "
                         f"({', '.join(IMAGE_EXTENSIONS)}){refused}.")
    frame = read_labels(labels, labels_name)
    lmap = LabelMap.build(card["classes"], card.get("class_names"), label_map,
                          "built-in + given map" if label_map else "built-in")
    columns = detect_columns(frame, index, lmap, given)
    return build_set(frame, index, card, lmap, columns, site_map, ignore_metadata, sample)
