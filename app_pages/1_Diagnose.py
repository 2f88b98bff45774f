"""Diagnose: upload dermoscopic image(s), add optional metadata, see the estimate, heatmap and report."""
from __future__ import annotations

import streamlit as st

from ui import audit_log
from ui import diagnose as ui
from ui.loaders import predictor_or_stop

st.set_page_config(page_title="Diagnose - dermoscopy decision support", layout="wide")
st.title("Diagnose")
st.caption("Decision support for clinicians trained in dermoscopy: an estimate, never a diagnosis.")

predictor = predictor_or_stop()

files = ui.uploads(predictor)
metadata = ui.metadata_form(predictor, files)
if not files:
    st.info("Upload a dermoscopic image (JPEG, PNG or DICOM) to begin.")
elif metadata is not None:
    cases = ui.analyse_all(predictor, files, metadata)
    if cases:
        override = ui.override_checkbox(cases)
        if len(cases) > 1:
            ui.results_table(predictor, cases, override)
        file_id, case = ui.choose_case(cases)
        ui.case_view(predictor, file_id, case, override)
ui.model_facts(predictor)
audit_log.own_log()
audit_log.full_log()
