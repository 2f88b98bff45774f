"""Explanations: which inputs drive the model, globally (stored with the bundle) and for one image."""
from __future__ import annotations

import time

import streamlit as st

from ui import explain as ui
from ui.loaders import predictor_or_stop

started = time.perf_counter()  # a button's click reruns the page: its wait is counted from here
st.set_page_config(page_title="Explanations - dermoscopy decision support", layout="wide")
st.title("Explanations")
st.caption("Which inputs move the model's estimate: across the validation split, and for one image.")

predictor = predictor_or_stop()
ui.global_section(predictor)

st.header("One image")
picked = ui.choose_image(predictor)
if picked is None:
    st.info("Upload or pick an image to see its explanations.")
    st.stop()
case = ui.analyse(predictor, picked, *ui.metadata_inputs(predictor, picked.defaults))
if case is None:
    st.stop()
ui.estimate_section(predictor, case)
if predictor.uses_metadata:
    ui.waterfall_section(predictor, case)
ui.image_shap_section(predictor, case, started)
ui.cam_section(predictor, case)
