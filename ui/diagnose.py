"""Widgets of the Diagnose page. Every widget key starts with "diagnose_"; all computation is in core."""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.clinic import audit
from core.clinic.diagnose import Case, Upload, analyse, audit_outputs, cam_map, decode, results_row
from core.clinic.report import (
    DISCLAIMER,
    build_report,
    class_label,
    headline_notes,
    metrics_lines,
    risk_statements,
    threshold_cost_lines,
    top_classes,
)
from core.data.metadata import UNKNOWN
from core.errors import InputError
from core.explain import heatmap
from core.inference import Predictor
from ui import audit_log

log = logging.getLogger(__name__)

UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom"]
TYPES_TEXT = "JPEG, PNG or DICOM (.jpg, .jpeg, .png, .dcm, .dicom)"
SEX_OPTIONS = [UNKNOWN, "female", "male"]
#: Images analysed per batch: each decoded image is kept for the session, so a batch is bounded.
MAX_FILES = 20
_STATE = "diagnose_state"  # session-scoped caches: decoded uploads, analyses, CAMs, audited keys


def _state() -> dict[str, dict]:
    if _STATE not in st.session_state:
        st.session_state[_STATE] = {"uploads": {}, "cases": {}, "cams": {}, "audited": set(), "prefilled": set(),
                                    "case_ids": {}, "versions": {}}
    return st.session_state[_STATE]


# -- upload ---------------------------------------------------------------------------------
def upload_limit_mb() -> int:
    """The upload limit set in .streamlit/config.toml (server.maxUploadSize)."""
    return int(st.get_option("server.maxUploadSize"))


def uploads(predictor: Predictor) -> list[tuple[str, Upload]]:
    """The uploader; returns (file id, decoded upload) for each good file, with an error shown for each bad one."""
    files = st.file_uploader(
        f"Dermoscopic image(s): {TYPES_TEXT}",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="diagnose_upload",
        help=f"Up to {upload_limit_mb()} MB per file and {MAX_FILES} files at a time. Several images give a results "
             "table.",
    ) or []
    if len(files) > MAX_FILES:
        st.warning(f"{len(files)} files were uploaded; only the first {MAX_FILES} are analysed at a time. Remove some "
                   "and upload the rest as another batch.")
        files = files[:MAX_FILES]
    cache = _state()["uploads"]
    good: list[tuple[str, Upload]] = []
    for file in files:
        if file.file_id not in cache:
            cache[file.file_id] = _decode(file, predictor.encoder.accepted_sites)
        result = cache[file.file_id]
        if isinstance(result, str):
            st.error(result)
        else:
            good.append((file.file_id, result))
    for stale in set(cache) - {f.file_id for f in files}:
        del cache[stale]
    return good


def _decode(file: Any, sites: list[str]) -> Upload | str:
    limit = upload_limit_mb()
    if file.size > limit * 1024 * 1024:
        return f"{file.name}: the file is {file.size / 2**20:.1f} MB, above the {limit} MB upload limit."
    try:
        return decode(file.getvalue(), file.name, sites)
    except InputError as exc:
        return f"{file.name}: {exc}"
    except Exception:  # never a traceback on the page; the log keeps it
        log.exception("unexpected failure decoding %s", file.name)
        return f"{file.name}: this file could not be read as an image."


# -- metadata -------------------------------------------------------------------------------
def _prefill(files: list[tuple[str, Upload]]) -> None:
    """Fill the form from DICOM tags, once per new DICOM upload, before the widgets are drawn."""
    done = _state()["prefilled"]
    for file_id, upload in files:
        if file_id in done or not upload.dicom_metadata:
            continue
        done.add(file_id)
        meta = upload.dicom_metadata
        if "age" in meta:
            st.session_state["diagnose_age"] = int(round(float(meta["age"])))
        if "sex" in meta:
            st.session_state["diagnose_sex"] = meta["sex"]
        if "site" in meta:
            st.session_state["diagnose_site"] = meta["site"]
        st.info(f"Age, sex and body site were filled in from the DICOM tags of {upload.filename} where present.")


def metadata_form(predictor: Predictor, files: list[tuple[str, Upload]]) -> dict[str, Any] | None:
    """Age, sex and body site (the model's own vocabulary); returns the checked values or None."""
    _prefill(files)
    st.subheader("Patient metadata")
    st.caption(
        "Optional, but it improves the estimate. Leave a field empty or 'unknown' if you do not know it. "
        "With several images, the metadata applies to all of them (one patient)."
    )
    cols = st.columns(3)
    age = cols[0].number_input("Age (years)", value=None, min_value=0, max_value=120, step=1, key="diagnose_age",
                               placeholder="unknown")
    sex = cols[1].selectbox("Sex", SEX_OPTIONS, key="diagnose_sex")
    site = cols[2].selectbox("Body site", [UNKNOWN, *predictor.encoder.accepted_sites], key="diagnose_site")
    try:
        age_checked, sex_checked, site_checked = predictor.encoder.check(age, sex, site)
    except InputError as exc:
        st.error(str(exc))
        return None
    return {"age": age_checked, "sex": sex_checked, "site": site_checked}


# -- analysis -------------------------------------------------------------------------------
def analyse_all(predictor: Predictor, files: list[tuple[str, Upload]], meta: dict[str, Any]) -> list[tuple[str, Case]]:
    """Analyse each upload once per (file, metadata); files that fail show their error and are skipped."""
    cache = _state()["cases"]
    wanted = {(file_id, meta["age"], meta["sex"], meta["site"], predictor.name) for file_id, _ in files}
    for stale in set(cache) - wanted:
        del cache[stale]
    cases = []
    with st.spinner("Analysing..."):
        for file_id, upload in files:
            key = (file_id, meta["age"], meta["sex"], meta["site"], predictor.name)
            if key not in cache:
                try:
                    cache[key] = analyse(predictor, upload, **meta)
                except InputError as exc:
                    cache[key] = f"{upload.filename}: {exc}"
            result = cache[key]
            if isinstance(result, str):
                st.error(result)
            else:
                cases.append((file_id, result))
    return cases


def case_id(predictor: Predictor, file_id: str, case: Case) -> str:
    """'C-1a2b3c4d/2': one ID per uploaded image in this session, versioned each time its metadata
    (or the model) changes; the PDF report and the audit row carry the same ID."""
    state = _state()
    meta = case.prediction.metadata_used
    key = (file_id, meta["age"], meta["sex"], meta["site"], predictor.name)
    if key not in state["case_ids"]:
        base = state["versions"].setdefault(file_id, [f"C-{uuid.uuid4().hex[:8]}", 0])
        base[1] += 1
        state["case_ids"][key] = f"{base[0]}/{base[1]}"
    return state["case_ids"][key]


def record(predictor: Predictor, file_id: str, case: Case, withheld: bool) -> None:
    """Write the analysis to the audit log once, tagged with this browser session (reruns of the
    page do not duplicate it); a withheld result is logged too, marked so. If it cannot be
    written, the result is still shown, with a warning saying that and why."""
    name = case_id(predictor, file_id, case)
    audited = _state()["audited"]
    if name in audited:
        return
    try:
        audit.write(case.upload.sha256, case.prediction.metadata_used, audit_outputs(case), predictor.name,
                    str(predictor.card.get("version", "?")), case.quality.flags, case_id=name, withheld=withheld,
                    session_id=audit_log.session_id())
        audited.add(name)
    except audit.AuditError as exc:  # the clinician still sees the output; core.clinic.audit logged the cause
        audit_log.not_logged(name, str(exc))
    except Exception:  # never a traceback on the page, and never a hidden result
        log.exception("audit write failed")
        audit_log.not_logged(name, "an unexpected error (the server log has the details)")


# -- several images -------------------------------------------------------------------------
def override_checkbox(cases: list[tuple[str, Case]]) -> bool:
    if not any(c.quality.withheld for _, c in cases):
        return False
    return st.checkbox(
        "Show the estimate for images that do not look dermoscopic anyway", value=False, key="diagnose_override",
        help="Only if you are sure the image is a dermoscopic image of a skin lesion: the model was not made "
             "for anything else, and its output on other images means nothing.",
    )


def results_table(predictor: Predictor, cases: list[tuple[str, Case]], override: bool) -> None:
    rows = []
    for file_id, case in cases:
        withheld = case.quality.withheld and not override
        record(predictor, file_id, case, withheld)
        row = {"case": case_id(predictor, file_id, case), **results_row(case)}
        if withheld:
            row.update({k: None for k in ("suggested class", "suggested class probability", "malignant risk",
                                          "melanoma risk")})
            row["consider referral"] = "withheld: not a dermoscopic image"
        rows.append(row)
    frame = pd.DataFrame(rows)
    st.subheader(f"Results for {len(rows)} images")
    st.dataframe(frame, hide_index=True, key="diagnose_table")
    st.download_button("Download the table (CSV)", frame.to_csv(index=False).encode(), file_name="diagnose_results.csv",
                       mime="text/csv", key="diagnose_csv", on_click="ignore")


def choose_case(cases: list[tuple[str, Case]]) -> tuple[str, Case]:
    if len(cases) == 1:
        return cases[0]
    names = [c.upload.filename for _, c in cases]
    index = st.selectbox("Case to examine", range(len(cases)), format_func=lambda i: names[i], key="diagnose_case")
    return cases[index]


# -- one case -------------------------------------------------------------------------------
def checks_banner(case: Case, override: bool) -> bool:
    """The image checks' outcome, before anything else; True when the estimate may be shown."""
    report = case.quality
    if report.withheld:
        st.error("**Not shown: this does not look like a dermoscopic image of a skin lesion.** "
                 + " ".join(report.messages))
        if not override:
            st.info("No estimate is shown for it. If it is a dermoscopic image, tick 'Show the estimate ... anyway' "
                    "above.")
        return override
    if report.flags:
        st.warning(f"**Caution ({report.grade})** - " + " ".join(report.messages))
    return True


def referral_box(predictor: Predictor, case: Case) -> None:
    """The referral decision for malignant and for melanoma: what the clinician reads first."""
    st.markdown("#### Referral decision")
    for statement in risk_statements(case.prediction, predictor.card):
        label = f"{statement.label}: {statement.value:.1%}" + (" - BORDERLINE" if statement.borderline else "")
        show = st.warning if statement.refer else st.info
        show(f"**{label}**, {statement.advice}", icon="⚠️" if statement.refer else "ℹ️")


def summary(predictor: Predictor, case: Case) -> None:
    p = case.prediction
    referral_box(predictor, case)
    st.metric("Suggested class", class_label(predictor.card, p.top))
    st.markdown("Most probable classes: " + "; ".join(
        f"{class_label(predictor.card, code)} {prob:.1%}" for code, prob in top_classes(p)))
    for note in headline_notes(p, predictor.card):
        st.info(note)
    st.caption("Suggested class: each probability weighed against how common that diagnosis is, so that rare "
               "diagnoses are not always outvoted by nevi. " + " ".join(threshold_cost_lines(predictor.card)))
    st.caption(f"Model: {predictor.name}, version {predictor.card.get('version', '?')}. {DISCLAIMER}")


def probability_chart(predictor: Predictor, case: Case) -> None:
    probs = sorted(case.prediction.probs.items(), key=lambda kv: kv[1])
    names = [class_label(predictor.card, code) for code, _ in probs]
    colours = ["#c0392b" if code in predictor.card["malignant"] else "#2e86c1" for code, _ in probs]
    fig = go.Figure(go.Bar(x=[p for _, p in probs], y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for _, p in probs], textposition="outside"))
    fig.update_layout(xaxis=dict(range=[0, 1.15], tickformat=".0%", title="probability (calibrated)"),
                      height=300, margin=dict(l=10, r=10, t=50, b=10), title="Class probabilities (red: malignant)")
    st.plotly_chart(fig, key="diagnose_chart", config={"displayModeBar": False})


def default_target(case: Case, melanoma: str) -> str:
    """The heatmap's default class: melanoma when its referral flag fires, else the suggested class."""
    return melanoma if case.prediction.refer_melanoma else case.prediction.top


def _cam(predictor: Predictor, file_id: str, case: Case, target: str, method: str) -> Any:
    cams = _state()["cams"]
    key = (file_id, tuple(case.prediction.metadata_used.values()), target, method)
    if key not in cams:
        with st.spinner(f"Computing {method} for {class_label(predictor.card, target)}..."):
            cams[key] = cam_map(predictor, case, target, method)
        for stale in [k for k in cams if k[:2] != key[:2]]:  # keep only this case's maps
            del cams[stale]
    return cams[key]


def heatmap_section(predictor: Predictor, file_id: str, case: Case) -> tuple[str, Any]:
    """Target class, method and opacity controls, then original | heatmap | overlay with its colour
    scale; returns the report's overlay (always for the headline class) and its caption."""
    st.subheader("Where the model looked")
    state = _state()
    headline = default_target(case, predictor.card["melanoma"])
    if state.get("cam_case") != (file_id, headline):  # a new case: the target defaults to its headline class
        state["cam_case"] = (file_id, headline)
        st.session_state["diagnose_cam_target"] = headline
    cols = st.columns(3)
    target = cols[0].selectbox("Target class", predictor.classes, key="diagnose_cam_target",
                               format_func=lambda c: class_label(predictor.card, c))
    method = cols[1].selectbox("Method", list(heatmap.CAM_METHODS), key="diagnose_cam_method")
    opacity = cols[2].slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key="diagnose_opacity")
    panels = heatmap.panels(case.array, _cam(predictor, file_id, case, target, method), opacity)
    captions = ["Original", f"{method} heatmap: {class_label(predictor.card, target)}", "Overlay"]
    for col, image, caption in zip(st.columns(3), panels.as_list(), captions):
        col.image(image, caption=caption, width="stretch")
    st.image(heatmap.colour_bar(), caption="Colour scale: blue 0 ... red 1 = this map's own maximum", width=300)
    rows, cols_ = grid(predictor)
    st.caption(f"The map shows **where** the model looked for {class_label(predictor.card, target)}, not how "
               f"likely it is: every map is scaled to its own maximum, so a class of 1% also gets a red spot. "
               f"It is computed on the last convolutional layer's {rows}x{cols_} grid and smoothed to the image, "
               "so it points at regions, not at single dermoscopic structures."
               + (f" {method} is class-agnostic: the same map for every target class."
                  if method in heatmap.CLASS_AGNOSTIC else ""))
    report_panels = panels if target == headline else heatmap.panels(
        case.array, _cam(predictor, file_id, case, headline, method), 0.4)
    return f"{method} overlay for {class_label(predictor.card, headline)}", report_panels


def report_button(predictor: Predictor, file_id: str, case: Case, caption: str, overlay: Any) -> None:
    name = case_id(predictor, file_id, case)

    def make() -> bytes:
        return build_report(case.prediction, predictor.card, case.array, overlay, caption, case.quality.messages,
                            case_id=name, filename=case.upload.filename)

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M")
    st.download_button("Download the PDF report", make, file_name=f"dermoscopy-report-{stamp}.pdf",
                       mime="application/pdf", key="diagnose_report", on_click="ignore", type="primary")


def case_view(predictor: Predictor, file_id: str, case: Case, override: bool) -> None:
    st.subheader(f"Case {case_id(predictor, file_id, case)}: {case.upload.filename}")
    shown = checks_banner(case, override)
    record(predictor, file_id, case, withheld=not shown)
    if not shown:
        st.image(case.upload.image, caption="As uploaded", width=300)
        return
    left, right = st.columns([2, 3])
    left.image(case.upload.image, caption="As uploaded (EXIF orientation applied)", width="stretch")
    with right:
        summary(predictor, case)
    probability_chart(predictor, case)
    caption, panels = heatmap_section(predictor, file_id, case)
    report_button(predictor, file_id, case, caption, panels.overlay)


@st.cache_resource
def _grid(_predictor: Predictor, name: str) -> tuple[int, int]:
    return heatmap.grid_shape(_predictor.model, tuple(_predictor.card["input"]["size"]))


def grid(predictor: Predictor) -> tuple[int, int]:
    """The CAM layer's grid for this model (computed once per model)."""
    return _grid(predictor, predictor.name)


def model_facts(predictor: Predictor) -> None:
    lines = metrics_lines(predictor.card)
    if lines:
        with st.expander(f"How well does {predictor.name} perform?"):
            st.markdown("\n".join(f"- {line}" for line in lines))
