"""The Validate page's widgets: where the set comes from, its columns and maps, the run, the results.

The set is an uploaded ZIP (checked member by member and kept in memory: never unpacked to disk,
each image decompressed only when it is scored) or a folder inside the data root, DERMO_DATA_DIR.
The server reads nothing outside that root: the chosen folder and CSV are resolved (`..` and
symlinks included) and checked, and so is every image.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from core.data.metadata import MetadataEncoder
from core.data.root import DATA_ENV, data_root, resolve_under
from core.errors import InputError
from core.figures import performance as pf
from core.inference import Predictor
from core.validation import report as vr
from core.validation import validate
from core.validation.inputs import (
    ROLES,
    ValidationSet,
    ZipSet,
    list_csvs,
    list_folders,
    load_set,
    open_zip,
    read_labels,
)
from core.validation.label_maps import load_user_map

ZIP_SOURCE, FOLDER_SOURCE = "Upload a ZIP (images + one CSV)", "A folder in the data folder"
DETECT, NONE = "(detect)", "(none)"
HOW_TO = (
    "A set is a folder of dermoscopic images (JPEG, PNG or DICOM) and a CSV with one row per image: the image's "
    "file name or id (with or without the extension) and its diagnosis, optionally age, sex, body site and a lesion "
    "or patient id. Diagnoses may be the HAM10000 codes (mel, nv, ...), common names (melanoma, common nevus, "
    "seborrheic keratosis, ...) or anything else with a label map (a CSV `label,code` or a JSON object)."
)


@dataclass
class Source:
    """Where the set is: a folder inside the data root, or an uploaded ZIP kept in memory."""

    folder: Path  # for a ZIP, its name
    labels: Path  # the label CSV (for a ZIP, inside it)
    label: str
    root: Path | None = None
    archive: ZipSet | None = None

    def labels_source(self) -> Path | bytes:
        """The label CSV to read: from the ZIP, or checked against the data root."""
        return self.archive.read(self.labels) if self.archive else resolve_under(self.root, self.labels)

    @property
    def read(self) -> validate.Reader:
        """How the set's images are read when it is scored."""
        return self.archive.read if self.archive else validate.read_file


@st.cache_data(ttl=60, show_spinner=False)
def _folders(root: str) -> list[str]:
    return list_folders(root)


def _pick_csv(csvs: list[str], where: str) -> str:
    if not csvs:
        raise InputError(f"There is no CSV in {where}: the set needs one row per image with its label.")
    return st.selectbox("Label CSV", csvs, key="validate_csv") if len(csvs) > 1 else csvs[0]


def choose_source() -> Source | None:
    """A ZIP upload or a folder under the data root; None while waiting. InputError if refused."""
    root = data_root()
    options = [ZIP_SOURCE] + ([FOLDER_SOURCE] if root else [])
    choice = st.radio("Where is the set?", options, horizontal=True, key="validate_source")
    if choice == ZIP_SOURCE:
        if root is None:
            st.caption(f"To choose a folder on the server instead, set {DATA_ENV} to the folder holding your sets.")
        upload = st.file_uploader("ZIP of the images and one label CSV", type=["zip"], key="validate_zip")
        if upload is None:
            return None
        archive = open_zip(upload.getvalue(), upload.name)
        return Source(Path(archive.name), Path(archive.name, _pick_csv(archive.csvs(), archive.name)),
                      f"uploaded {upload.name}", archive=archive)
    folders = _folders(str(root))
    relative = st.selectbox(f"Folder in {root}", folders, index=None, placeholder="Choose the set's folder",
                            key="validate_folder")
    if relative is None:
        return None
    folder = resolve_under(root, relative)
    return Source(folder, folder / _pick_csv(list_csvs(folder), folder.name or str(folder)),
                  f"{relative} in the data folder", root=root)


@st.cache_data(max_entries=8, show_spinner="Reading the set...")
def _load(folder: str, labels: str, stamp: str, root: str | None, card_json: str, given: tuple,
          label_map: bytes | None, site_map: bytes | None, ignore_metadata: bool, sample: int,
          _archive: ZipSet | None = None) -> ValidationSet:
    """The set, cached per content (`stamp`: the CSV's mtime, or the ZIP's sha256)."""
    card = json.loads(card_json)
    lmap = load_user_map(label_map, card["classes"], "label", "label map") if label_map else None
    smap = (load_user_map(site_map, MetadataEncoder.from_dict(card["metadata"]).accepted_sites, "site", "site map")
            if site_map else None)
    images, csv = (_archive, _archive.read(labels)) if _archive is not None else (folder, labels)
    return load_set(images, csv, card, dict(given), lmap, smap, root=root, ignore_metadata=ignore_metadata,
                    sample=sample or None)


def set_options(card: dict[str, Any], source: Source) -> ValidationSet:
    """Column and map widgets (defaults: detected) -> the set to score; InputError if unusable."""
    labels = source.labels_source()
    columns = list(read_labels(labels).columns)
    given: dict[str, str] = {}
    with st.expander("Columns, label map and options", expanded=False):
        cols = st.columns(3)
        for i, role in enumerate(ROLES):
            extra = [] if role in ("id", "label") else [NONE]
            pick = cols[i % 3].selectbox(f"{role} column", [DETECT, *extra, *columns], key=f"validate_col_{role}")
            if pick != DETECT:
                given[role] = "" if pick == NONE else pick
        a, b = st.columns(2)
        label_map = a.file_uploader("Label map (CSV label,code or JSON)", type=["csv", "json"], key="validate_label_map")
        site_map = b.file_uploader("Body-site map (CSV or JSON)", type=["csv", "json"], key="validate_site_map")
        ignore = a.checkbox("Ignore age, sex and site", key="validate_no_metadata")
        sample = b.number_input("Score a random sample of (0 = every image)", 0, 100_000, 0, key="validate_sample")
        a.number_input("Bootstrap resamples for the 95% intervals", 0, 10_000, validate.N_BOOT, 100,
                       key="validate_bootstrap")
    stamp = hashlib.sha256(source.archive.data).hexdigest() if source.archive else str(labels.stat().st_mtime)
    return _load(str(source.folder), str(source.labels), stamp, str(source.root) if source.root else None,
                 json.dumps(card), tuple(sorted(given.items())), label_map.getvalue() if label_map else None,
                 site_map.getvalue() if site_map else None, ignore, int(sample), _archive=source.archive)


def set_overview(vset: ValidationSet) -> None:
    c = vset.columns
    present = vset.rows["code"].value_counts().sort_index()
    st.markdown(f"**{len(vset.rows)} images to score** of {vset.n_csv_rows} CSV rows: "
                + ", ".join(f"{code} {n}" for code, n in present.items()) + ".")
    used = ", ".join(f"{role} = `{getattr(c, role)}`" for role in ROLES if getattr(c, role))
    st.caption(f"Columns: {used}. Labels mapped: " + ", ".join(f"{k} -> {v}" for k, v in list(vset.label_map.items())[:12]))
    problems = vr.problems_lines(vset.problems)
    if problems:
        with st.expander(f"Left out or changed ({len(problems)})", expanded=True):
            st.markdown("\n".join(f"- {line}" for line in problems))


@st.cache_resource
def _lock() -> threading.Lock:
    """One validation at a time per server: several concurrent torch runs on few cores crawl."""
    return threading.Lock()


def signature(vset: ValidationSet, card: dict[str, Any]) -> str:
    return hashlib.sha256((card.get("sha256", "") + vset.rows.to_json()).encode()).hexdigest()[:16]


def run(predictor: Predictor, vset: ValidationSet, source: Source) -> None:
    bar = st.progress(0.0, text="Waiting for another validation to finish..." if _lock().locked() else "Scoring...")
    with _lock():
        n_boot = int(st.session_state.get("validate_bootstrap", validate.N_BOOT))
        report, scored = validate.run(predictor, vset, predictor.name, n_boot, read=source.read,
                                      progress=lambda done, total: bar.progress(
                                          done / max(total, 1), text=f"Scored {done} of {total} images"))
    bar.empty()
    report["set"]["folder"] = source.label  # never show the server's paths
    csv = validate.predictions_frame(scored, predictor.classes).to_csv(index=False).encode()
    st.session_state["validate_result"] = (signature(vset, predictor.card), report, csv, vr.pdf_summary(report))


def current(vset: ValidationSet, card: dict[str, Any]) -> tuple[dict[str, Any], bytes, bytes] | None:
    saved = st.session_state.get("validate_result")
    return saved[1:] if saved and saved[0] == signature(vset, card) else None


def results(report: dict[str, Any], csv: bytes, pdf: bytes) -> None:
    m, ref = report["metrics"]["all"], report["reference"]
    st.header("This set beside the model card")
    st.caption(f"{m['n_images']} images scored in {report['seconds']['scoring']:.0f} s. Card: {ref['label']}. "
               f"95% intervals: {report['bootstrap']['resamples']} bootstrap resamples by {report['bootstrap']['unit']}.")
    st.dataframe(vr.comparison_table(report), hide_index=True, key="validate_table")
    st.plotly_chart(vr.headline_figure(report), key="validate_headline")
    st.subheader("Per class")
    st.dataframe(vr.per_class_table(report), hide_index=True, key="validate_per_class")
    mode = st.radio("Confusion matrix", ["Counts", "Row-normalised"], horizontal=True, key="validate_confusion_mode")
    st.plotly_chart(vr.confusion_figure(report, mode == "Row-normalised"), key="validate_confusion")
    for task in ("melanoma", "malignant"):
        figure = vr.curves_figure(report, task)
        if figure is not None:
            st.plotly_chart(figure, key=f"validate_curves_{task}")
    st.subheader("Calibration")
    st.plotly_chart(vr.reliability_figure(report), key="validate_reliability")
    st.subheader("Quality and out-of-distribution checks")
    q = report["quality"]
    st.markdown(f"{q['flagged']} of {q['n_images']} images flagged ({q['flagged_share']:.1%})"
                + (": " + vr.quality_text(q) if q["by_flag"] else "") + ".")
    both = vr.with_without_table(report)
    if both is not None:
        st.dataframe(both, hide_index=True, key="validate_with_without")
    st.subheader("Subgroups")
    variables = vr.subgroup_variables(report)
    if variables:
        variable = st.selectbox("Subgroups by", variables, key="validate_subgroup_by")
        metric = st.selectbox("Metric", ["balanced_accuracy", "malignant_auroc", "melanoma_auroc", "malignant_sensitivity",
                                         "malignant_specificity"], format_func=pf.SUBGROUP_COLUMNS.get,
                              key="validate_subgroup_metric")
        st.plotly_chart(pf.subgroup_figure(report["subgroups"]["rows"], variable, metric), key="validate_subgroup_chart")
        st.dataframe(vr.subgroup_table(report, variable), hide_index=True, key="validate_subgroup_table")
    else:
        st.info(f"No subgroups: {report['subgroups']['reason']}.")
    a, b, c = st.columns(3)
    a.download_button("Per-image predictions (CSV)", csv, "predictions.csv", "text/csv", key="validate_download_csv")
    b.download_button("Summary (PDF)", pdf, "validation_summary.pdf", "application/pdf", key="validate_download_pdf")
    c.download_button("All figures (JSON)", json.dumps(validate.clean_json(report), indent=1), "validation.json",
                      "application/json", key="validate_download_json")
    st.caption("To refit the temperature and referral thresholds on a set like this one, run `python -m core.validation.validate "
               "--images DIR --labels CSV --refit-out NEW_FOLDER`: it writes a copy of the bundle whose card says where "
               "they came from; the served model is never changed.")
