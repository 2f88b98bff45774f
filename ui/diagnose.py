"""Widgets of the Diagnose page. Every widget key starts with "diagnose_"; all computation is in core."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import audit, heatmap
from core.diagnose import Case, Upload, analyse, audit_outputs, cam_map, decode, results_row
from core.errors import InputError
from core.inference import Predictor
from core.metadata import UNKNOWN
from core.report import DISCLAIMER, build_report, class_label, metrics_lines, risk_statements

log = logging.getLogger(__name__)

UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom"]
SEX_OPTIONS = [UNKNOWN, "female", "male"]
_STATE = "diagnose_state"  # session-scoped caches: decoded uploads, analyses, CAMs, audited keys


def _state() -> dict[str, dict]:
    if _STATE not in st.session_state:
        st.session_state[_STATE] = {"uploads": {}, "cases": {}, "cams": {}, "audited": set(), "prefilled": set()}
    return st.session_state[_STATE]


# -- upload ---------------------------------------------------------------------------------
def upload_limit_mb() -> int:
    """The upload limit set in .streamlit/config.toml (server.maxUploadSize)."""
    return int(st.get_option("server.maxUploadSize"))


def uploads(predictor: Predictor) -> list[tuple[str, Upload]]:
    """The uploader; returns (file id, decoded upload) for each good file, with an error shown for each bad one."""
    files = st.file_uploader(
        "Dermoscopic image(s): JPEG, PNG or DICOM",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key="diagnose_upload",
        help=f"Up to {upload_limit_mb()} MB per file. Several images give a results table.",
    ) or []
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
            st.session_state["diagnose_age"] = float(meta["age"])
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
    age = cols[0].number_input("Age (years)", value=None, step=1.0, format="%.0f", key="diagnose_age",
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


def record(predictor: Predictor, case: Case) -> None:
    """Write the case to the audit log once per session (reruns of the page do not duplicate it)."""
    meta = case.prediction.metadata_used
    key = (case.upload.sha256, meta["age"], meta["sex"], meta["site"], predictor.name)
    audited = _state()["audited"]
    if key in audited:
        return
    try:
        audit.write(case.upload.sha256, meta, audit_outputs(case), predictor.name,
                    str(predictor.card.get("version", "?")), case.quality.flags)
        audited.add(key)
    except Exception:  # the clinician still sees the output; the failure is logged loudly
        log.exception("audit write failed")
        st.warning("This result could not be written to the audit log.")


# -- several images -------------------------------------------------------------------------
def override_checkbox(cases: list[tuple[str, Case]]) -> bool:
    flagged = [c for _, c in cases if not c.quality.ok]
    if not flagged:
        return True
    return st.checkbox(
        "Show the output for images with quality warnings anyway", value=False, key="diagnose_override",
        help="The estimate for these images is less reliable.",
    )


def results_table(predictor: Predictor, cases: list[tuple[str, Case]], override: bool) -> None:
    rows = []
    for _, case in cases:
        row = results_row(case)
        if not case.quality.ok and not override:
            row.update({k: None for k in ("top class", "top probability", "malignant risk", "melanoma risk")})
            row["consider referral"] = "withheld (quality)"
        else:
            record(predictor, case)
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
def quality_gate(case: Case, override: bool) -> bool:
    """Warn about quality flags; True when the output may be shown."""
    if case.quality.ok:
        return True
    st.warning("**Image quality warning** - " + " ".join(case.quality.messages))
    if not override:
        st.info("The output for this image is withheld. Tick 'Show the output ... anyway' above to see it.")
    return override


def probability_chart(predictor: Predictor, case: Case) -> None:
    probs = sorted(case.prediction.probs.items(), key=lambda kv: kv[1])
    names = [class_label(predictor.card, code) for code, _ in probs]
    colours = ["#c0392b" if code in predictor.card["malignant"] else "#2e86c1" for code, _ in probs]
    fig = go.Figure(go.Bar(x=[p for _, p in probs], y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for _, p in probs], textposition="outside"))
    fig.update_layout(xaxis=dict(range=[0, 1.15], tickformat=".0%", title="probability (calibrated)"),
                      height=300, margin=dict(l=10, r=10, t=30, b=10), title="Class probabilities (red: malignant)")
    st.plotly_chart(fig, key="diagnose_chart", config={"displayModeBar": False})


def summary(predictor: Predictor, case: Case) -> None:
    p = case.prediction
    top = p.probs[p.top]
    st.metric("Most likely class", class_label(predictor.card, p.top))
    st.markdown(f"Probability **{top:.1%}**" + (
        " - the model is uncertain: no class reaches 50 %; weigh the risks below and your own assessment."
        if top < 0.5 else ""))
    for statement in risk_statements(p, predictor.card):
        show = st.warning if statement.refer else st.info
        show(f"**{statement.label}: {statement.value:.1%}**, {statement.advice}", icon="⚠️" if statement.refer else "ℹ️")
    st.caption(f"Model: {predictor.name}, version {predictor.card.get('version', '?')}. {DISCLAIMER}")


def heatmap_section(predictor: Predictor, file_id: str, case: Case) -> tuple[str, Any]:
    """Target class, method and opacity controls, then original | heatmap | overlay."""
    st.subheader("Where the model looked")
    state = _state()
    if state.get("cam_case") != file_id:  # a new case: the target class defaults to its top class
        state["cam_case"] = file_id
        st.session_state["diagnose_cam_target"] = case.prediction.top
    cols = st.columns(3)
    target = cols[0].selectbox("Target class", predictor.classes, key="diagnose_cam_target",
                               format_func=lambda c: class_label(predictor.card, c))
    method = cols[1].selectbox("Method", list(heatmap.CAM_METHODS), key="diagnose_cam_method")
    opacity = cols[2].slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key="diagnose_opacity")
    if method in heatmap.CLASS_AGNOSTIC:
        st.caption(f"{method} is class-agnostic: it shows the dominant activation pattern, whatever the target class.")
    key = (file_id, tuple(case.prediction.metadata_used.values()), target, method)
    if key not in state["cams"]:
        with st.spinner(f"Computing {method}..."):
            state["cams"] = {key: cam_map(predictor, case, target, method)}  # keep only the current map
    panels = heatmap.panels(case.array, state["cams"][key], opacity)
    captions = ["Original", f"{method} heatmap: {class_label(predictor.card, target)}", "Overlay"]
    for col, image, caption in zip(st.columns(3), panels.as_list(), captions):
        col.image(image, caption=caption, width="stretch")
    return f"{method} overlay for {class_label(predictor.card, target)}", panels


def report_button(predictor: Predictor, case: Case, caption: str, overlay: Any) -> None:
    def make() -> bytes:
        return build_report(case.prediction, predictor.card, case.array, overlay, caption, case.quality.messages)

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M")
    st.download_button("Download the PDF report", make, file_name=f"dermoscopy-report-{stamp}.pdf",
                       mime="application/pdf", key="diagnose_report", on_click="ignore", type="primary")


def case_view(predictor: Predictor, file_id: str, case: Case, override: bool) -> None:
    st.subheader(f"Case: {case.upload.filename}")
    if not quality_gate(case, override):
        st.image(case.upload.image, caption="As uploaded", width=300)
        return
    record(predictor, case)
    left, right = st.columns([2, 3])
    left.image(case.upload.image, caption="As uploaded (EXIF orientation applied)", width="stretch")
    with right:
        summary(predictor, case)
    probability_chart(predictor, case)
    caption, panels = heatmap_section(predictor, file_id, case)
    report_button(predictor, case, caption, panels.overlay)


# -- audit log ------------------------------------------------------------------------------
def audit_log_section() -> None:
    with st.expander(f"Audit log ({audit.count()} records)"):
        st.caption(f"Time, image sha256, metadata, outputs, model and quality flags; never the image. "
                   f"Database: {audit.db_path()}")
        st.dataframe(audit.read(limit=200), hide_index=True, key="diagnose_audit_table")
        st.download_button("Export the audit log (CSV)", lambda: audit.read().to_csv(index=False).encode(),
                           file_name="audit_log.csv", mime="text/csv", key="diagnose_audit_csv", on_click="ignore")


def model_facts(predictor: Predictor) -> None:
    lines = metrics_lines(predictor.card)
    if lines:
        with st.expander(f"How well does {predictor.name} perform?"):
            st.markdown("\n".join(f"- {line}" for line in lines))
