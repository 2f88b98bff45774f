"""Model performance: the model card for a clinician, test metrics, operating points, calibration,
subgroups, and the comparison study. Everything comes from stored aggregates: no dataset needed."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import performance_figures as pf
from core.errors import InputError
from ui.loaders import card_or_stop
from ui.performance import comparison_path, get_comparison

st.set_page_config(page_title="Model performance - dermoscopy decision support", page_icon="🔬", layout="wide")
st.title("Model performance")

card = card_or_stop()

classes = card["classes"]
names = card.get("class_names", {})
data = card.get("data", {})
metrics = card.get("metrics", {})
test = metrics.get("all_inputs")
agg = metrics.get("aggregates")
thresholds = card.get("referral_thresholds", {})

# -- the model card ---------------------------------------------------------------------------
st.header(f"Model card: {card.get('name', '?')}, version {card.get('version', '?')}")
left, right = st.columns(2)
with left:
    st.markdown(
        "**Intended use.** "
        + card.get("intended_use", "Decision support for trained clinicians; not a screening tool and not a "
                                   "stand-alone diagnostic test.")
    )
    spec = card.get("model", {})
    size = card.get("input", {}).get("size", ["?", "?"])
    st.markdown(
        f"**Model.** Backbone `{spec.get('backbone', '?')}` "
        f"({'ImageNet-pretrained' if spec.get('pretrained') else 'trained from scratch'}), "
        f"{'image + age, sex and body site' if spec.get('use_metadata') else 'image only'}; "
        f"input {size[1]}x{size[0]} pixels; probabilities calibrated by temperature scaling "
        f"(T = {card.get('temperature', 1.0):.2f}, fitted on the validation split)."
    )
    st.markdown(
        f"**Training data.** {data.get('source', 'HAM10000')}. Licence: **{data.get('licence', 'CC BY-NC 4.0')}** "
        "(non-commercial use only; the model inherits this restriction)."
    )
    st.markdown(f"**Split.** {data.get('split_method', 'lesion-grouped')}: images of one lesion are never in two splits.")
    counts = data.get("counts")
    if counts:
        st.dataframe(pd.DataFrame(counts).T.assign(total=lambda f: f.sum(axis=1)), key="perf_counts")
with right:
    st.markdown(
        "**Known limitations.**\n"
        "- HAM10000 comes mostly from fair-skinned patients in Austria and Australia: performance on darker "
        "skin types is unknown.\n"
        "- Sites and ages follow those clinics' referral patterns: acral, mucosal and childhood lesions are rare.\n"
        "- Training images are 200x150 pixels: fine dermoscopic structures visible at full resolution are lost.\n"
        "- Seven diagnoses only: a lesion of any other kind (e.g. squamous cell carcinoma, Merkel cell "
        "carcinoma) will still receive one of these seven labels.\n"
        "- About half the benign diagnoses rest on follow-up or consensus, not histopathology.\n"
        "- Data licence CC BY-NC 4.0: not for commercial use."
    )
    if thresholds:
        st.markdown("**Referral thresholds used by the Diagnose page** (from the card):")
        for task, entry in thresholds.items():
            st.markdown(f"- {task}: refer at probability >= **{entry['threshold']:.3f}**; chosen as the "
                        f"{entry.get('how', 'threshold stored in the card')}.")

if not test:
    st.info("This model card holds no test metrics. Run `make card` (python -m core.evaluate --write-card) with the dataset present.")
    st.stop()

# -- test metrics -------------------------------------------------------------------------------
st.header("Test metrics")
ci = (agg or {}).get("ci95", {})
st.caption(f"Lesion-grouped test split: {test['n_images']} images of {test['n_lesions']} lesions never seen in training. "
           "95% intervals resample whole lesions (1,000 bootstrap draws).")
headline = [
    ("Accuracy", test["accuracy"], ci.get("accuracy")),
    ("Balanced accuracy", test["balanced_accuracy"], ci.get("balanced_accuracy")),
    ("Melanoma AUROC", test["melanoma"]["auroc"], test["melanoma"].get("auroc_ci95")),
    ("Malignant AUROC", test["malignant"]["auroc"], test["malignant"].get("auroc_ci95")),
]
for col, (label, value, interval) in zip(st.columns(4), headline):
    col.metric(label, f"{value:.3f}")
    if interval:
        col.caption(pf.ci_text(interval))
st.dataframe(pf.per_class_table(test, agg, names), hide_index=True, key="perf_per_class")
withheld = metrics.get("metadata_withheld")
if withheld:
    st.caption(
        f"With all metadata withheld: balanced accuracy {withheld['balanced_accuracy']:.3f}, melanoma AUROC "
        f"{withheld['melanoma']['auroc']:.3f}, malignant AUROC {withheld['malignant']['auroc']:.3f}."
    )

normalise = st.radio("Confusion matrix", ["Counts", "Row-normalised"], horizontal=True, key="perf_confusion_mode")
st.plotly_chart(pf.confusion_figure(test["confusion_matrix"], classes, normalise == "Row-normalised"), key="perf_confusion")

if card.get("history"):
    st.subheader("Training curves")
    st.plotly_chart(pf.history_figure(card["history"]), key="perf_history")
    best = card.get("training", {}).get("best_epoch")
    if best:
        st.caption(f"The weights are those of epoch {best}, the lowest validation loss.")

if not agg:
    st.info("Curves, operating points, calibration and subgroups are not in this card yet: run `make card`.")
    st.stop()

st.subheader("ROC and precision-recall curves")
for task in ("melanoma", "malignant"):
    curves = agg["curves"].get(task)
    if curves:
        st.plotly_chart(pf.roc_pr_figure(curves, task), key=f"perf_curves_{task}")

# -- operating point ------------------------------------------------------------------------------
st.header("Operating point: sensitivity for malignant lesions")
rows = agg["operating_points"].get("malignant", [])
card_thr = thresholds.get("malignant", {}).get("threshold")
if rows:
    target = st.slider("Target sensitivity for malignant lesions", 0.50, 1.00, 0.90, 0.01, key="perf_target_sensitivity")
    chosen = pf.operating_point(rows, target)
    c = st.columns(4)
    c[0].metric("Threshold", f"{chosen['threshold']:.3f}")
    c[1].metric("Sensitivity", f"{chosen['sensitivity']:.3f}")
    c[2].metric("Specificity", f"{chosen['specificity']:.3f}")
    c[3].metric("Share of cases referred", f"{chosen['referred_fraction']:.1%}")
    st.plotly_chart(pf.operating_figure(rows, chosen, card_thr), key="perf_operating")
    st.caption(
        "These thresholds are read off the test split itself, so they describe the trade-off rather than a rule. "
        "The threshold the Diagnose page uses was fixed beforehand on the validation split "
        f"({thresholds.get('malignant', {}).get('how', 'see the card')}); on the test split it gives sensitivity "
        f"{test['malignant']['sensitivity']:.3f} and specificity {test['malignant']['specificity']:.3f}."
    )
sens80 = agg.get("sensitivity_at_80_specificity", {}).get("malignant")
if sens80:
    st.caption(f"At 80% specificity the malignant sensitivity is {sens80['sensitivity']:.3f}.")

# -- calibration ----------------------------------------------------------------------------------
st.header("Calibration")
st.plotly_chart(pf.reliability_figure(agg["reliability"]), key="perf_reliability")
st.caption("Points on the diagonal mean a stated 80% confidence is right 80% of the time. "
           "ECE = expected calibration error (15 equal-width bins, top class).")

# -- subgroups --------------------------------------------------------------------------------------
st.header("Subgroups")
subgroups = agg.get("subgroups")
if subgroups:
    variable = st.selectbox("Subgroups by", ["sex", "age band", "body site", "diagnosis confirmation"], key="perf_subgroup_by")
    metric = st.selectbox("Metric", ["balanced_accuracy", "accuracy", "malignant_auroc", "melanoma_auroc",
                                     "malignant_sensitivity", "malignant_specificity"],
                          format_func=lambda m: pf.SUBGROUP_COLUMNS[m], key="perf_subgroup_metric")
    st.plotly_chart(pf.subgroup_figure(subgroups, variable, metric), key="perf_subgroup_chart")
    st.dataframe(pf.subgroup_table(subgroups, variable), hide_index=True, key="perf_subgroup_table")
    st.caption("Small groups give unstable numbers: read each with its count. An empty cell (None): not defined "
               "(e.g. AUROC in a group without a malignant lesion).")
else:
    st.info("No subgroup table in this card (it needs the test frame: run `make card`).")

# -- the comparison study -------------------------------------------------------------------------------
st.header("Comparison with the papers' models")
try:
    comparison = get_comparison()
except InputError as exc:
    comparison = None
    st.error(str(exc))
if comparison is None:
    st.info(f"The comparison study has not been run here yet ({comparison_path().name} is missing): `make compare`.")
else:
    st.caption(comparison.get("description", ""))
    st.dataframe(pf.comparison_table(comparison), hide_index=True, key="perf_comparison")
    figure = pf.comparison_figure(comparison)
    if figure is not None:
        st.plotly_chart(figure, key="perf_comparison_chart")
        st.caption("Points: test-split estimates; bars: lesion-bootstrap 95% intervals. Where the bars "
                   "overlap, this test split cannot tell the models apart.")
    for note in comparison.get("notes", []):
        st.markdown(f"- {note}")
