"""The Explanations page's sections and cached loaders.

Global results (permutation importance, metadata SHAP) come from the bundle's stored file, or
are recomputed here from the dataset. The dataset is found as the Dataset explorer finds it:
DERMO_DATA_DIR names a HAM10000 folder or a folder holding one (the README's ../shared/data);
unset, the page works without a dataset. For one image: its estimate, the metadata waterfall,
the image SHAP map and the CAM comparison.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import streamlit as st
import torch

from core.clinic.imageio import load_rgb
from core.config import CLASS_NAMES, SPLITS_DIR
from core.data.metadata import UNKNOWN
from core.data.root import confine_images, data_root
from core.errors import InputError
from core.explain import heatmap, importance
from core.figures import explain as ef
from core.inference import Prediction, Predictor
from core.model.concurrency import model_slot
from core.model.networks import image_features
from ui.explorer import datasets_under
from ui.loaders import model_dir

SPLIT_FILE = SPLITS_DIR / "ham10000.csv"
UPLOAD, PICK = "Upload an image", "Pick from the validation/test images"


def class_names(predictor: Predictor) -> dict[str, str]:
    return predictor.card.get("class_names") or CLASS_NAMES


# -- the dataset ----------------------------------------------------------------------------
def ham_folder() -> Path | None:
    """The HAM10000 folder DERMO_DATA_DIR names or holds (the first one found), or None."""
    root = data_root()
    if root is None:
        return None
    return next((path for path in datasets_under(str(root)).values() if path.is_dir()), None)


@st.cache_data(show_spinner="Reading the dataset index...")
def dataset_index(root: str, split_file: str) -> pd.DataFrame:
    """Validation and test images (never training images) with their metadata, for the picker."""
    from core.data.datasets import load_ham10000

    frame, _ = load_ham10000(root)
    frame = confine_images(frame, data_root() or root)
    split = pd.read_csv(split_file) if Path(split_file).is_file() else None
    if split is not None:
        frame = frame.merge(split, on="image_id", how="left")
        frame = frame[frame["split"].isin(["val", "test"])]
    frame = frame[frame["image_path"].notna()]
    return frame[["image_id", "dx", "age", "sex", "site", "image_path"] + (["split"] if "split" in frame else [])]


# -- across the validation split ------------------------------------------------------------
@st.cache_data(show_spinner=False)
def get_explanations(bundle_dir: str, mtime: float) -> dict[str, Any] | None:
    """The bundle's explanations.json (`mtime` keys the cache, so a recomputed file is re-read)."""
    return importance.read_explanations(bundle_dir)


def _stored(predictor: Predictor) -> dict[str, Any] | None:
    """This session's recomputed results for this model, else the bundle's stored ones (or None)."""
    recomputed = st.session_state.get("explain_recomputed")
    if recomputed and recomputed[0] == predictor.card["sha256"]:
        return recomputed[1]
    path = model_dir() / importance.EXPLANATIONS_FILE
    try:
        return get_explanations(str(model_dir()), path.stat().st_mtime if path.is_file() else 0.0)
    except InputError as exc:  # e.g. stored for weights since retrained: the rest of the page still works
        st.warning(str(exc))
        return None


def _recompute(predictor: Predictor, folder: Path) -> dict[str, Any] | None:
    """Permutation importance and metadata SHAP on the validation split, with a labelled progress bar."""
    bar = st.progress(0.0, text="Reading the dataset...")
    try:
        result = importance.explain_split(predictor.model, predictor.card, folder, SPLIT_FILE, "val",
                                       progress=lambda f, what: bar.progress(f, text=f"{what.capitalize()}: {f:.0%}"))
    except InputError as exc:
        st.error(str(exc))
        return None
    finally:
        bar.empty()
    st.session_state["explain_recomputed"] = (predictor.card["sha256"], result)
    return result


def global_section(predictor: Predictor) -> None:
    """Stored (or recomputed) permutation importance and metadata SHAP summaries."""
    st.header("Across the validation split")
    stored, folder = _stored(predictor), ham_folder()
    if stored is None:
        st.info("No stored explanations for this model. Run `make explain` (python -m core.explain.importance) to store them "
                "with the bundle" + (", or compute them here." if folder else "."))
    if folder is not None and st.button("Recompute from the dataset (several minutes)", key="explain_recompute"):
        stored = _recompute(predictor, folder) or stored
    if stored is None:
        return
    st.caption(f"{stored.get('split', 'val')} split: {stored['n_images']} images of {stored['n_lesions']} lesions; "
               f"computed {stored.get('created', '?')}.")
    st.download_button("Download these results (JSON)", json.dumps(stored, indent=1), "explanations.json",
                       key="explain_download")
    _permutation(stored)
    if "shap" in stored:
        _metadata_shap(stored, class_names(predictor))
    else:
        st.caption("This model does not use metadata: no metadata SHAP.")


def _permutation(stored: dict[str, Any]) -> None:
    st.subheader("Permutation importance")
    st.markdown("Each input is shuffled across cases and the model re-scored: the larger the drop, the more the "
                "model relies on it. Image features are shuffled as one group (each case gets another's image).")
    metric = st.radio("Score", list(ef.METRIC_LABELS), format_func=ef.METRIC_LABELS.get, horizontal=True,
                      key="explain_perm_metric")
    st.plotly_chart(ef.permutation_figure(stored["permutation"]["rows"], metric), key="explain_perm_chart")
    st.caption(f"Mean drop over {stored['permutation']['n_repeats']} shuffles; bars: 95% intervals resampling "
               "whole lesions. An interval that contains 0: no measurable importance on this split.")


def _metadata_shap(stored: dict[str, Any], names: dict[str, str]) -> None:
    st.subheader("SHAP for the metadata")
    st.markdown("How far each entered field moves the estimate away from the estimate with that field left "
                "unknown (exact Shapley values over age, sex and site, the image held fixed).")
    outputs = stored["shap"]["outputs"]
    output = st.selectbox("Output", list(outputs), key="explain_shap_output",
                          format_func=lambda o: ef.output_name(o, names))
    entry, label = outputs[output], ef.output_name(output, names)
    left, right = st.columns([1, 2])
    left.plotly_chart(ef.shap_bar_figure(entry, label), key="explain_shap_bar")
    right.plotly_chart(ef.beeswarm_figure(entry, label), key="explain_shap_beeswarm")
    field_name = st.selectbox("Mean SHAP by value of", list(entry["by_value"]), key="explain_shap_field")
    st.dataframe(ef.by_value_table(entry, field_name), hide_index=True, key="explain_shap_table")


# -- one image ------------------------------------------------------------------------------
@dataclass
class Picked:
    """The image to explain, with the metadata the picker knows (blank for an upload)."""

    raw: bytes
    defaults: dict[str, Any] = field(default_factory=lambda: {"age": None, "sex": UNKNOWN, "site": UNKNOWN})


def _pick_label(index: pd.DataFrame, names: dict[str, str]) -> Callable[[str], str]:
    """'ISIC_0024306 (Melanocytic nevus, test split)': the diagnosis by name, never its code."""
    dx, split = index["dx"].to_dict(), index["split"].to_dict() if "split" in index else {}
    return lambda i: f"{i} ({names.get(dx[i], dx[i])}" + (f", {split[i]} split)" if i in split else ")")


def _from_dataset(predictor: Predictor, folder: Path) -> Picked | None:
    try:
        index = dataset_index(str(folder), str(SPLIT_FILE)).set_index("image_id")
        image_id = st.selectbox("Image", index.index.tolist(), key="explain_pick",
                                format_func=_pick_label(index, class_names(predictor)))
        row = index.loc[image_id]
        raw = Path(row["image_path"]).read_bytes()
    except (InputError, OSError) as exc:
        st.error(f"The dataset could not be read: {exc}")
        return None
    age = None if pd.isna(row["age"]) else float(row["age"])
    return Picked(raw, {"age": age, "sex": row["sex"], "site": row["site"]})


def choose_image(predictor: Predictor) -> Picked | None:
    """An uploaded image, or one of the validation/test images when the dataset is present."""
    folder = ham_folder()
    sources = [UPLOAD] + ([PICK] if folder is not None else [])
    if st.radio("Image", sources, horizontal=True, key="explain_source") == PICK:
        return _from_dataset(predictor, folder)
    upload = st.file_uploader("Dermoscopic image (JPEG or PNG)", type=["jpg", "jpeg", "png"], key="explain_upload")
    return Picked(upload.getvalue()) if upload is not None else None


def _option_index(options: list[str], value: Any) -> int:
    return options.index(value) if value in options else 0


def metadata_inputs(predictor: Predictor, defaults: dict[str, Any]) -> tuple[int | None, str, str]:
    """Age, sex and site, pre-filled from the picked image's record."""
    encoder, (a, b, c) = predictor.encoder, st.columns(3)
    age = a.number_input("Age (years; empty = unknown)", 0, 120, key="explain_age",
                         value=None if defaults["age"] is None else int(defaults["age"]))
    sexes, sites = [UNKNOWN, *encoder.sexes], [UNKNOWN, *encoder.accepted_sites]
    sex = b.selectbox("Sex", sexes, index=_option_index(sexes, defaults["sex"]), key="explain_sex")
    site = c.selectbox("Body site", sites, index=_option_index(sites, defaults["site"]), key="explain_site")
    return age, sex, site


@dataclass
class Case:
    """One image with its metadata, decoded and preprocessed once, and its estimate."""

    rgb: np.ndarray
    image: torch.Tensor
    meta: torch.Tensor
    age: int | None
    sex: str
    site: str
    prediction: Prediction
    key: tuple  # identifies image, model and metadata: computed results are kept per key


@st.cache_data(show_spinner=False, max_entries=32)
def _predict(_predictor: Predictor, model_key: str, image_key: str, _rgb: np.ndarray, _image: torch.Tensor,
             age: int | None, sex: str, site: str) -> Prediction:
    """The estimate (one forward, checks included), kept so a button's rerun does not repeat it."""
    return _predictor.predict_decoded([_rgb], _image.unsqueeze(0), [{"age": age, "sex": sex, "site": site}])[0]


@st.cache_data(show_spinner=False, max_entries=32)
def _features(_predictor: Predictor, model_key: str, image_key: str, _image: torch.Tensor) -> np.ndarray:
    """Pooled image features, flip-averaged as the estimate is (reused by every metadata what-if)."""
    with torch.no_grad(), model_slot():
        return image_features(_predictor.model, _image.unsqueeze(0), _predictor.flip_average).numpy()


def analyse(predictor: Predictor, picked: Picked, age: int | None, sex: str, site: str) -> Case | None:
    """Decode, preprocess and predict once; a bad image or record gives a message, not a traceback."""
    try:
        rgb = np.asarray(load_rgb(picked.raw))
        image, meta = predictor.tensor_from_rgb(rgb), predictor.meta_tensor(age, sex, site)
        image_key, model_key = hashlib.sha256(picked.raw).hexdigest()[:16], predictor.card["sha256"][:16]
        prediction = _predict(predictor, model_key, image_key, rgb, image, age, sex, site)
    except InputError as exc:
        st.error(str(exc))
        return None
    return Case(rgb, image, meta, age, sex, site, prediction, (model_key, image_key, age, sex, site))


def estimate_section(predictor: Predictor, case: Case) -> None:
    """The image, its top three classes by name, the two risks, and any image-check warnings."""
    names, p = class_names(predictor), case.prediction
    st.image(case.rgb, caption="The image", width=320)
    top = sorted(p.probs.items(), key=lambda kv: -kv[1])[:3]
    st.markdown("**Estimate:** " + ", ".join(f"{names.get(c, c)} {v:.1%}" for c, v in top) +
                f". Malignant {p.malignant:.1%}, melanoma {p.melanoma:.1%}.")
    for message in p.quality.messages if p.quality else []:
        st.warning(message)


def waterfall_section(predictor: Predictor, case: Case) -> None:
    """What each entered field added to this case's estimate (exact Shapley values)."""
    st.subheader("What the metadata added (SHAP waterfall)")
    feats = _features(predictor, *case.key[:2], case.image)
    game = importance.MetadataGame(predictor.model, predictor.encoder, predictor.calibration)
    shap_case = importance.case_metadata_shap(game, feats, case.age, case.sex, case.site, predictor.classes)
    groups, names = importance.output_groups(predictor.card), class_names(predictor)
    output = st.selectbox("Output", list(groups), key="explain_case_output",
                          format_func=lambda o: ef.output_name(o, names))
    values, base = shap_case.for_output(groups[output])
    st.plotly_chart(ef.waterfall_figure(values, base, shap_case.labels(), ef.output_name(output, names)),
                    key="explain_waterfall")


def image_shap_section(predictor: Predictor, case: Case, started: float) -> None:
    """Expected-gradients maps for the top classes; the budget runs from `started` (the click's rerun)."""
    st.subheader("SHAP for the image")
    st.markdown("Where pixels push the estimate **towards** (red) or **away from** (blue) each class, compared with "
                "blurred versions of the same image (expected gradients).")
    a, b, c = st.columns(3)
    top_k = a.slider("Top classes", 1, 3, 2, key="explain_shap_topk")
    budget = b.slider("Time budget (seconds, from the click to the map)", 5, 120, 15, key="explain_shap_budget")
    samples = c.select_slider("Samples per class", [16, 32, 64, 128, 256, 512], value=64, key="explain_shap_samples")
    shap_key = (*case.key, top_k, budget, samples)
    if st.button("Compute the SHAP map", key="explain_shap_run"):
        _run_image_shap(predictor, case, top_k, budget, samples, started, shap_key)
    saved = st.session_state.get("explain_shap")
    if saved and saved[0] == shap_key:
        result, names = saved[1], class_names(predictor)
        input_spec, classes = predictor.card["input"], predictor.classes
        pixels = importance.model_pixels(case.image, input_spec["mean"], input_spec["std"])
        titles = [f"{names.get(classes[i], classes[i])} ({case.prediction.probs[classes[i]]:.0%})" for i in result.classes]
        st.plotly_chart(ef.image_shap_figure(pixels, result.maps, titles), key="explain_shap_image")
        st.caption(result.summary(budget))


def _run_image_shap(predictor: Predictor, case: Case, top_k: int, budget: int, samples: int, started: float,
                    shap_key: tuple) -> None:
    bar = st.progress(0.0, text="SHAP: loading the explainer...")
    ranked = sorted(case.prediction.probs, key=case.prediction.probs.get, reverse=True)
    targets = [predictor.classes.index(c) for c in ranked[:top_k]]
    try:
        result = importance.image_shap(predictor.model, case.image, case.meta, targets, predictor.calibration, samples,
                                    float(budget), start=started,
                                    progress=lambda f: bar.progress(f, text=f"SHAP: {f:.0%} of the samples or budget"))
        st.session_state["explain_shap"] = (shap_key, result)
    except InputError as exc:
        st.error(str(exc))
    bar.empty()


def cam_section(predictor: Predictor, case: Case) -> None:
    """Several CAM methods side by side with pytorch-grad-cam's faithfulness scores."""
    st.subheader("Compare CAM methods")
    names, probs = class_names(predictor), case.prediction.probs
    a, b = st.columns(2)
    methods = a.multiselect("Methods", list(heatmap.CAM_METHODS), default=["Grad-CAM", "Grad-CAM++", "EigenCAM"],
                            key="explain_cam_methods")
    target = b.selectbox("Class", sorted(probs, key=probs.get, reverse=True), format_func=lambda c: names.get(c, c),
                         key="explain_cam_class")
    cam_key = (*case.key, tuple(methods), target)
    if st.button("Compute CAMs and their faithfulness", key="explain_cam_run", disabled=not methods):
        with st.spinner("Computing CAMs and the ROAD faithfulness scores..."):
            cams, table = importance.cam_faithfulness(predictor.model, case.image, case.meta,
                                                   predictor.classes.index(target), methods)
        st.session_state["explain_cam"] = (cam_key, cams, table)
    saved = st.session_state.get("explain_cam")
    if saved and saved[0] == cam_key:
        _, cams, table = saved
        for col, (method, cam) in zip(st.columns(len(cams)), cams.items()):
            col.image(heatmap.panels(case.rgb, cam).overlay, caption=method)
        st.dataframe(ef.cam_table(table), hide_index=True, key="explain_cam_table")
        st.caption("Scores from pytorch-grad-cam's metrics: ROAD removes the most / least relevant pixels (20-80%) "
                   "and measures the change in the class probability; the second multiplies the image by the CAM.")
