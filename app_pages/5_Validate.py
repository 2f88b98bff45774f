"""Validate: score the served model on a clinic's own labelled set, beside the card's HAM10000 figures."""
from __future__ import annotations

import streamlit as st

from core.errors import InputError
from ui import validate as ui
from ui.loaders import card_or_stop, predictor_or_stop

st.set_page_config(page_title="Validate - dermoscopy decision support", layout="wide")
st.title("Validate on your own images")
st.caption("Check the model on your own patients and cameras before relying on it: the model card's figures come "
           "from HAM10000 alone, and models often do worse on images from other clinics.")
st.markdown(ui.HOW_TO)

card = card_or_stop()
try:
    source = ui.choose_source()
    vset = ui.set_options(card, source) if source is not None else None
except InputError as exc:
    st.error(str(exc))
    st.stop()
if vset is None:
    st.info("Upload a ZIP or choose a folder to begin.")
    st.stop()

ui.set_overview(vset)
if st.button("Score the set", key="validate_run", type="primary"):
    try:
        ui.run(predictor_or_stop(), vset, source)
    except InputError as exc:
        st.error(str(exc))
result = ui.current(vset, card)
if result is not None:
    ui.results(*result)
