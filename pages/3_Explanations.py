"""Explanations: which inputs drive the model, globally (stored with the bundle) and for one image."""
from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pandas as pd
import streamlit as st

from core import explain, heatmap
from core import explain_figures as ef
from core.errors import InputError
from core.imageio import load_rgb
from core.metadata import UNKNOWN
from ui.explain import (
    data_dir, dataset_present, explanations_mtime, get_explanations, image_features, picker_index,
)
from ui.loaders import model_dir, predictor_or_stop

log = logging.getLogger(__name__)
st.set_page_config(page_title="Explanations - dermoscopy decision support", page_icon="🔬", layout="wide")
st.title("Explanations")
st.caption("Which inputs move the model's estimate: across the validation split, and for one image.")

predictor = predictor_or_stop()
card = predictor.card
classes = predictor.classes
names = card.get("class_names", {})
has_dataset = dataset_present()

# -- global results ---------------------------------------------------------------------------
st.header("Across the validation split")
try:
    stored = get_explanations(str(model_dir()), explanations_mtime(model_dir()))
except InputError as exc:
    stored = None
    st.error(str(exc))
stored = st.session_state.get("explain_recomputed", stored)
if stored is None:
    st.info("No stored explanations for this model. Run `make explain` (python -m core.explain) to store them "
            "with the bundle" + (", or compute them here." if has_dataset else "."))
if has_dataset and st.button("Recompute from the dataset (several minutes)", key="explain_recompute"):
    bar = st.progress(0.0, text="Reading the dataset and extracting image features...")
    try:
        from core.data import prepare_for_card, subset
        from core.config import SPLITS_DIR

        frame, images, _ = prepare_for_card(card, data_dir(), SPLITS_DIR / "ham10000.csv")
        frame, images = subset(frame, images, frame["split"] == "val")
        result = explain.compute_global(predictor.model, card, frame, images,
                                        progress=lambda f: bar.progress(f, text="Permutation importance..."))
        result["split"] = "val"
        st.session_state["explain_recomputed"] = stored = result
        bar.progress(1.0, text="Done")
    except InputError as exc:
        st.error(str(exc))
if stored is not None:
    st.caption(f"{stored.get('split', 'val')} split: {stored['n_images']} images of {stored['n_lesions']} lesions; "
               f"computed {stored.get('created', '?')}.")
    st.download_button("Download these results (JSON)", json.dumps(stored, indent=1), "explanations.json",
                       key="explain_download")
    st.subheader("Permutation importance")
    st.markdown("Each input is shuffled across cases and the model re-scored: the larger the drop, the more the "
                "model relies on it. Image features are shuffled as one group (each case gets another's image).")
    metric = st.radio("Score", list(ef.METRIC_LABELS), format_func=ef.METRIC_LABELS.get, horizontal=True,
                      key="explain_perm_metric")
    st.plotly_chart(ef.permutation_figure(stored["permutation"]["rows"], metric), key="explain_perm_chart")
    st.caption(f"Mean drop over {stored['permutation']['n_repeats']} shuffles; bars: 95% intervals resampling "
               "whole lesions. An interval that contains 0: no measurable importance on this split.")
    if "shap" in stored:
        st.subheader("SHAP for the metadata")
        st.markdown("How far each entered field moves the estimate away from the estimate with that field left "
                    "unknown (exact Shapley values over age, sex and site, the image held fixed).")
        outputs = list(stored["shap"]["outputs"])
        output = st.selectbox("Output", outputs, key="explain_shap_output",
                              format_func=lambda o: names.get(o, o) if o in names else f"{o} (any)")
        entry = stored["shap"]["outputs"][output]
        a, b = st.columns([1, 2])
        a.plotly_chart(ef.shap_bar_figure(entry, output), key="explain_shap_bar")
        b.plotly_chart(ef.beeswarm_figure(entry, output), key="explain_shap_beeswarm")
        field = st.selectbox("Mean SHAP by value of", list(entry["by_value"]), key="explain_shap_field")
        st.dataframe(ef.by_value_table(entry, field), hide_index=True, key="explain_shap_table")
    else:
        st.caption("This model does not use metadata: no metadata SHAP.")

# -- one image ----------------------------------------------------------------------------------
st.header("One image")
sources = ["Upload an image"] + (["Pick from the validation/test images"] if has_dataset else [])
source = st.radio("Image", sources, horizontal=True, key="explain_source")
raw, defaults = None, {"age": None, "sex": UNKNOWN, "site": UNKNOWN}
if source == sources[0]:
    upload = st.file_uploader("Dermoscopic image (JPEG or PNG)", type=["jpg", "jpeg", "png"], key="explain_upload")
    if upload is not None:
        raw = upload.getvalue()
else:
    try:
        index = picker_index().set_index("image_id")
        dx = index["dx"].to_dict()
        image_id = st.selectbox("Image", index.index.tolist(), key="explain_pick", format_func=lambda i: f"{i} ({dx[i]})")
        row = index.loc[image_id]
        raw = open(row["image_path"], "rb").read()
        defaults = {"age": None if pd.isna(row["age"]) else float(row["age"]), "sex": row["sex"], "site": row["site"]}
    except (InputError, OSError) as exc:
        st.error(f"The dataset could not be read: {exc}")
if raw is None:
    st.info("Upload or pick an image to see its explanations.")
    st.stop()

encoder = predictor.encoder
m1, m2, m3 = st.columns(3)
age = m1.number_input("Age (years; empty = unknown)", 0, 120, value=None if defaults["age"] is None else int(defaults["age"]),
                      key="explain_age")
sex_options = [UNKNOWN, *encoder.sexes]
sex = m2.selectbox("Sex", sex_options, index=sex_options.index(defaults["sex"]) if defaults["sex"] in sex_options else 0,
                   key="explain_sex")
site_options = [UNKNOWN, *encoder.accepted_sites]
site = m3.selectbox("Body site", site_options,
                    index=site_options.index(defaults["site"]) if defaults["site"] in site_options else 0, key="explain_site")

try:
    image = predictor.image_tensor(raw)
    original = np.array(load_rgb(raw))
    meta = predictor.meta_tensor(age, sex, site)
    prediction = predictor.predict(raw, age=age, sex=sex, site=site)
except InputError as exc:
    st.error(str(exc))
    st.stop()
image_key = hashlib.sha256(raw).hexdigest()[:16]
model_key = card["sha256"][:16]
probs = pd.Series(prediction.probs).sort_values(ascending=False)
st.image(original, caption="The image", width=320)
st.markdown("**Estimate:** " + ", ".join(f"{names.get(c, c)} {p:.1%}" for c, p in probs.head(3).items()) +
            f". Malignant {prediction.malignant:.1%}, melanoma {prediction.melanoma:.1%}.")

if predictor.uses_metadata:
    st.subheader("What the metadata added (SHAP waterfall)")
    feats = image_features(predictor, model_key, image_key, image)
    game = explain.MetadataGame(predictor.model, encoder, predictor.calibration)
    case = explain.case_metadata_shap(game, feats, age, sex, site, classes)
    groups = explain.output_groups(card)
    output = st.selectbox("Output", list(groups), key="explain_case_output",
                          format_func=lambda o: names.get(o, o) if o in names else f"{o} (any)")
    values, base = case.for_output(groups[output])
    labels = [f"{f} = {case.given[f] if case.given[f] is not None else UNKNOWN}" for f in case.fields]
    st.plotly_chart(ef.waterfall_figure(values, base, labels, output), key="explain_waterfall")

st.subheader("SHAP for the image")
st.markdown("Where pixels push the estimate **towards** (red) or **away from** (blue) each class, compared with "
            "blurred versions of the same image (expected gradients).")
s1, s2, s3 = st.columns(3)
top_k = s1.slider("Top classes", 1, 3, 2, key="explain_shap_topk")
budget = s2.slider("Time budget (seconds)", 5, 120, 15, key="explain_shap_budget")
samples = s3.select_slider("Samples per class", [16, 32, 64, 128, 256, 512], value=64, key="explain_shap_samples")
shap_key = ("explain_shap_result", image_key, model_key, age, sex, site, top_k, budget, samples)
if st.button("Compute the SHAP map", key="explain_shap_run"):
    bar = st.progress(0.0, text="SHAP: sampling...")
    targets = [classes.index(c) for c in probs.index[:top_k]]
    try:
        result = explain.image_shap(predictor.model, image, meta, targets, predictor.calibration, samples, float(budget),
                                    progress=lambda f: bar.progress(f, text=f"SHAP: {f:.0%}"))
        st.session_state["explain_shap"] = (shap_key, result)
    except InputError as exc:
        st.error(str(exc))
    bar.empty()
saved = st.session_state.get("explain_shap")
if saved and saved[0] == shap_key:
    result = saved[1]
    pixels = explain.model_pixels(image, card["input"]["mean"], card["input"]["std"])
    titles = [f"{names.get(classes[c], classes[c])} ({prediction.probs[classes[c]]:.0%})" for c in result.classes]
    st.plotly_chart(ef.image_shap_figure(pixels, result.maps, titles), key="explain_shap_image")
    note = " (stopped by the time budget: raise it for a less noisy map)" if result.stopped_by_budget else ""
    st.caption(f"{result.samples} samples per class in {result.seconds:.1f} s{note}.")

st.subheader("Compare CAM methods")
c1, c2 = st.columns(2)
methods = c1.multiselect("Methods", list(heatmap.CAM_METHODS), default=["Grad-CAM", "Grad-CAM++", "EigenCAM"],
                         key="explain_cam_methods")
target_name = c2.selectbox("Class", list(probs.index), format_func=lambda c: names.get(c, c), key="explain_cam_class")
cam_key = ("explain_cam_result", image_key, model_key, age, sex, site, tuple(methods), target_name)
if st.button("Compute CAMs and their faithfulness", key="explain_cam_run", disabled=not methods):
    with st.spinner("Computing CAMs and the ROAD faithfulness scores..."):
        cams, table = explain.cam_faithfulness(predictor.model, image, meta, classes.index(target_name), methods)
    st.session_state["explain_cam"] = (cam_key, cams, table)
saved = st.session_state.get("explain_cam")
if saved and saved[0] == cam_key:
    _, cams, table = saved
    cols = st.columns(len(cams))
    for col, (method, cam) in zip(cols, cams.items()):
        col.image(heatmap.panels(original, cam).overlay, caption=method)
    st.dataframe(table.rename(columns={"road_combined": "ROAD combined (higher = more faithful)",
                                       "confidence_change": "confidence change, image x CAM (higher = better)",
                                       "seconds": "CAM time (s)"}), hide_index=True, key="explain_cam_table")
    st.caption("Scores from pytorch-grad-cam's metrics: ROAD removes the most / least relevant pixels (20-80%) and "
               "measures the change in the class probability; the second multiplies the image by the CAM.")
