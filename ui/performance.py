"""The Model performance page's sections and its cached loader (the comparison study's results).

Every section reads stored aggregates from the card (or the comparison JSON): no dataset needed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.clinic.report import calibration_text, threshold_cost_lines
from core.config import REPO_ROOT
from core.errors import InputError
from core.figures import performance as pf
from core.model.evaluate import MIN_TRAININGS

#: Environment variable naming the comparison study's results file.
COMPARISON_ENV = "DERMO_COMPARISON"
DEFAULT_COMPARISON = REPO_ROOT / "results" / "comparison.json"
#: Environment variable naming the default bundles' paired differences (`bench/bench_model.py --json`).
PAIRED_ENV = "DERMO_PAIRED_DIFFERENCES"
DEFAULT_PAIRED = REPO_ROOT / "results" / "paired_differences.json"


def comparison_path() -> Path:
    return Path(os.environ.get(COMPARISON_ENV, DEFAULT_COMPARISON))


def paired_path() -> Path:
    return Path(os.environ.get(PAIRED_ENV, DEFAULT_PAIRED))


@st.cache_data
def _read(path: str, mtime: float) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}).") from None


def read_results(path: Path) -> dict[str, Any] | None:
    """A results file, or None before the command that writes it has run (re-read when it changes)."""
    if not path.is_file():
        return None
    return _read(str(path), path.stat().st_mtime)


def get_comparison() -> dict[str, Any] | None:
    """The comparison study's results, or None before the study has been run."""
    return read_results(comparison_path())


LIMITATIONS = (
    "**Known limitations.**\n"
    "- HAM10000 comes mostly from fair-skinned patients in Austria and Australia: performance on darker "
    "skin types is unknown.\n"
    "- Sites and ages follow those clinics' referral patterns: acral, mucosal and childhood lesions are rare.\n"
    "- Training images are 200x150 pixels: fine dermoscopic structures visible at full resolution are lost.\n"
    "- Seven diagnoses only: a lesion of any other kind (e.g. squamous cell carcinoma, Merkel cell "
    "carcinoma) will still receive one of these seven labels.\n"
    "- About half the benign diagnoses rest on follow-up or consensus, not histopathology.\n"
    "- On images from other clinics the model ranks lesions less well than on its own test split: check it on "
    "your own images (Validate page) before relying on it.\n"
    "- Data licence CC BY-NC 4.0: not for commercial use."
)


def model_card_section(card: dict[str, Any]) -> None:
    data = card.get("data", {})
    st.header(f"Model card: {card.get('name', '?')}, version {card.get('version', '?')}")
    left, right = st.columns(2)
    with left:
        st.markdown("**Intended use.** " + card.get("intended_use", "Decision support for trained clinicians."))
        spec, size = card.get("model", {}), card.get("input", {}).get("size", ["?", "?"])
        flip = " averaged with its mirror image" if card.get("input", {}).get("flip_average") else ""
        st.markdown(
            f"**Model.** Backbone `{spec.get('backbone', '?')}` "
            f"({'ImageNet-pretrained' if spec.get('pretrained') else 'trained from scratch'}), "
            f"{'image + age, sex and body site' if spec.get('use_metadata') else 'image only'}; input "
            f"{size[1]}x{size[0]} pixels{flip}; {calibration_text(card)}."
        )
        st.markdown(f"**Training data.** {data.get('source', 'HAM10000')}. Licence: **{data.get('licence', '?')}** "
                    "(non-commercial use only; the model inherits this restriction).")
        st.markdown(f"**Split.** {data.get('split_method', '?')}: images of one lesion are never in two splits.")
        if data.get("counts"):
            st.dataframe(pd.DataFrame(data["counts"]).T.assign(total=lambda f: f.sum(axis=1)), key="perf_counts")
    with right:
        st.markdown(LIMITATIONS)
        if card.get("referral_thresholds"):
            st.markdown("**Referral thresholds used by the Diagnose page, and what they cost:**")
            st.markdown("\n".join(f"- {line}" for line in threshold_cost_lines(card)))


def test_metrics_section(card: dict[str, Any]) -> None:
    test, agg = card["metrics"]["all_inputs"], card["metrics"].get("aggregates") or {}
    names = card.get("class_names", {})
    st.header("Test metrics")
    ci = agg.get("ci95", {})
    st.caption(f"Lesion-grouped test split: {test['n_images']} images of {test['n_lesions']} lesions never seen in "
               "training. 95% intervals resample whole lesions (1,000 bootstrap draws). Classes by the suggested-"
               "class rule the Diagnose page uses.")
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
    for view, text in (("metadata_withheld", "With all metadata withheld"),
                       ("centre_crop", "On square centre crops of the same images (the central 150x150)")):
        other = card["metrics"].get(view)
        if other:
            st.caption(f"{text}: balanced accuracy {other['balanced_accuracy']:.3f}, melanoma AUROC "
                       f"{other['melanoma']['auroc']:.3f}, malignant AUROC {other['malignant']['auroc']:.3f}.")
    normalise = st.radio("Confusion matrix", ["Counts", "Row-normalised"], horizontal=True, key="perf_confusion_mode")
    labels = [names.get(c, c) for c in card["classes"]]
    st.plotly_chart(pf.confusion_figure(test["confusion_matrix"], labels, normalise == "Row-normalised"),
                    key="perf_confusion")
    st.caption("Rows: the true diagnosis; columns: the suggested class.")
    if card.get("history"):
        st.subheader("Training curves")
        st.plotly_chart(pf.history_figure(card["history"]), key="perf_history")
        best = card.get("training", {}).get("best_epoch")
        if best:
            st.caption(f"The weights are those of epoch {best}, the lowest validation loss.")


def curves_section(agg: dict[str, Any]) -> None:
    st.subheader("ROC and precision-recall curves")
    for task in ("melanoma", "malignant"):
        if agg["curves"].get(task):
            st.plotly_chart(pf.roc_pr_figure(agg["curves"][task], task), key=f"perf_curves_{task}")


def operating_point_section(card: dict[str, Any], agg: dict[str, Any]) -> None:
    st.header("Operating point: sensitivity for malignant lesions")
    rows, test = agg["operating_points"].get("malignant", []), card["metrics"]["all_inputs"]
    malignant = card.get("referral_thresholds", {}).get("malignant", {})
    if rows:
        target = st.slider("Target sensitivity for malignant lesions", 0.50, 1.00, 0.90, 0.01,
                           key="perf_target_sensitivity")
        chosen = pf.operating_point(rows, target)
        c = st.columns(4)
        c[0].metric("Threshold", f"{chosen['threshold']:.3f}")
        c[1].metric("Sensitivity", f"{chosen['sensitivity']:.3f}")
        c[2].metric("Specificity", f"{chosen['specificity']:.3f}")
        c[3].metric("Share of cases referred", f"{chosen['referred_fraction']:.1%}")
        st.plotly_chart(pf.operating_figure(rows, chosen, malignant.get("threshold")), key="perf_operating")
        st.caption(
            "These thresholds are read off the test split itself, so they describe the trade-off rather than a rule. "
            f"The threshold the Diagnose page uses was fixed beforehand ({malignant.get('how', 'see the card')}); on "
            f"the test split it gives sensitivity {test['malignant']['sensitivity']:.3f} and specificity "
            f"{test['malignant']['specificity']:.3f}."
        )
    sens80 = agg.get("sensitivity_at_80_specificity", {}).get("malignant")
    if sens80:
        st.caption(f"At 80% specificity the malignant sensitivity is {sens80['sensitivity']:.3f}.")


def calibration_section(agg: dict[str, Any]) -> None:
    st.header("Calibration")
    st.markdown("Does a stated risk of 30% mean that 30 of 100 such lesions are malignant? Each point groups test "
                "images by stated risk; on the diagonal, stated and observed agree. ECE = expected calibration "
                "error, the average gap weighted by the number of images.")
    risks = [r for r in ("malignant", "melanoma", "top") if r in agg["reliability"]]
    if len(risks) < 3:
        st.info("This card stores only part of the calibration (written by an older version): run `make card`.")
    for col, risk in zip(st.columns(3), risks):
        col.plotly_chart(pf.reliability_figure(agg["reliability"], risk), key=f"perf_reliability_{risk}")


def subgroups_section(agg: dict[str, Any]) -> None:
    st.header("Subgroups")
    subgroups = agg.get("subgroups")
    if not subgroups:
        st.info("No subgroup table in this card (it needs the test frame: run `make card`).")
        return
    variable = st.selectbox("Subgroups by", ["sex", "age band", "body site", "diagnosis confirmation"],
                            key="perf_subgroup_by")
    metric = st.selectbox("Metric", list(pf.SUBGROUP_METRICS), format_func=lambda m: pf.SUBGROUP_COLUMNS[m],
                          key="perf_subgroup_metric")
    st.plotly_chart(pf.subgroup_figure(subgroups, variable, metric), key="perf_subgroup_chart")
    st.dataframe(pf.subgroup_table(subgroups, variable), hide_index=True, key="perf_subgroup_table")
    st.caption(f"Bars and brackets: 95% lesion-bootstrap intervals. Grey bars and 'few positives': the metric rests "
               f"on fewer than {pf.MIN_POSITIVES} positive lesions and can swing widely. 'not defined': e.g. AUROC "
               "in a group without a malignant lesion.")


def comparison_section() -> None:
    st.header("Comparison with the papers' models")
    try:
        comparison = get_comparison()
    except InputError as exc:
        st.error(str(exc))
        return
    if comparison is None:
        st.info(f"The comparison study has not been run here yet ({comparison_path().name} is missing): "
                "`make compare`.")
        return
    st.caption(comparison.get("description", ""))
    st.dataframe(pf.comparison_table(comparison), hide_index=True, key="perf_comparison")
    figure = pf.comparison_figure(comparison)
    if figure is not None:
        st.plotly_chart(figure, key="perf_comparison_chart")
        st.caption("Points: test-split estimates; bars: lesion-bootstrap 95% intervals. Where the bars "
                   "overlap, this test split cannot tell the models apart.")
    if comparison.get("differences"):
        st.subheader("Each row against the default model, paired")
        fewest = min(d.get("trainings") or 1 for d in comparison["differences"])
        st.caption("Every row minus the app's default (row 4), both scored on the same resampled test lesions. "
                   + (f"Some rows rest on {pf.trainings_each({'trainings': fewest})}: " if fewest < MIN_TRAININGS
                      else "")
                   + "a difference can also be run-to-run variance, which this interval does not include.")
        differences_view(comparison["differences"], "perf_comparison_differences")
    for note in comparison.get("notes", []):
        st.markdown(f"- {note}")


def differences_view(differences: list[dict[str, Any]], key: str) -> None:
    """The difference plot, and the ties named under it."""
    st.plotly_chart(pf.difference_figure(differences), key=key)
    def named(verdict: str) -> list[str]:
        return [f"{d['comparison']}, {pf.DIFFERENCE_METRICS[d['metric']]}"
                + (f" ({pf.trainings_each(d)})" if verdict == "unconfirmed" else "")
                for d in differences if pf.verdict_of(d) == verdict]

    ties, unconfirmed = named("tie"), named("unconfirmed")
    st.caption("Points: the difference on the test split; bars: its 95% interval. An interval that contains 0 "
               "is a tie: this test split cannot tell the two apart. "
               + (f"Ties: {'; '.join(ties)}. " if ties else "No tie. ")
               + (f"Clear of 0 but from too few trainings of each model, so not claimed (a claim needs "
                  f"{MIN_TRAININGS} trainings, seeds, of each: the interval leaves out run-to-run variance): "
                  f"{'; '.join(unconfirmed)}." if unconfirmed else ""))


def paired_differences_section() -> None:
    st.header("Paired comparisons of the default models")
    try:
        results = read_results(paired_path())
    except InputError as exc:
        st.error(str(exc))
        return
    if results is None:
        st.info("The paired comparisons have not been computed here yet: "
                "`python bench/bench_model.py --json results/paired_differences.json`.")
        return
    st.caption(f"{results['description']}: {results['n_images']} test images of {results['n_lesions']} lesions, "
               f"{results['bootstrap']} resamples. Each model is scored with its own card's decision rule.")
    differences_view(results["differences"], "perf_paired_differences")
