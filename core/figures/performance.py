"""Plotly figures and tables for the Model performance page, built from the model card alone.

Pure functions of the card's stored aggregates (no dataset, no streamlit), so the page is a
thin script and the figures can be tested directly.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures.layout import with_toolbar_room
from core.model.evaluate import difference_verdict

CLASS_LABEL = "{name} ({code})"


def per_class_table(metrics: dict[str, Any], aggregates: dict[str, Any] | None, class_names: dict[str, str]) -> pd.DataFrame:
    """Precision, recall, F1, support and AUROC (with its 95% interval where stored) per class."""
    ci = (aggregates or {}).get("ci95", {}).get("per_class_auroc", {})
    rows = []
    for code, m in metrics["per_class"].items():
        lo, hi = ci.get(code, (np.nan, np.nan))
        rows.append({"class": CLASS_LABEL.format(name=class_names.get(code, code), code=code),
                     "precision": m["precision"], "recall (sensitivity)": m["recall"], "F1": m["f1"],
                     "support": m["support"], "AUROC": m["auroc"], "AUROC 95% CI": _interval(lo, hi)})
    return pd.DataFrame(rows)


def _interval(lo: float, hi: float) -> str:
    return "n/a" if lo is None or hi is None or np.isnan(lo) or np.isnan(hi) else f"{lo:.3f}-{hi:.3f}"


def ci_text(ci: list[float] | tuple[float, float]) -> str:
    """'95% CI 0.780-0.840'."""
    return f"95% CI {_interval(*ci)}"


def interval_text(value: float, ci: list[float] | tuple[float, float] | None) -> str:
    """'0.812 (95% CI 0.780-0.840)' or just the value (no interval, or an undefined one)."""
    if ci is None or any(pd.isna(c) for c in ci):
        return f"{value:.3f}"
    return f"{value:.3f} ({ci_text(ci)})"


def confusion_figure(matrix: list[list[int]], classes: list[str], normalise: bool) -> go.Figure:
    """Confusion matrix; row-normalised shows each true class's recall along the diagonal."""
    counts = np.asarray(matrix, dtype=float)
    if normalise:
        totals = counts.sum(axis=1, keepdims=True)
        z = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        text = [[f"{v:.2f}" for v in row] for row in z]
    else:
        z, text = counts, [[f"{int(v)}" for v in row] for row in counts]
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=classes, text=text, texttemplate="%{text}",
                               colorscale="Blues", showscale=False, hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed", height=420)
    return with_toolbar_room(fig, "Row-normalised (each row sums to 1)" if normalise else "Counts")


def history_figure(history: list[dict[str, Any]]) -> go.Figure:
    """Training and validation loss and accuracy per epoch."""
    frame = pd.DataFrame(history)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"))
    for col, dash, name in (("train_loss", None, "training"), ("val_loss", "dash", "validation")):
        if col in frame:
            fig.add_trace(go.Scatter(x=frame["epoch"], y=frame[col], name=f"{name} loss", line=dict(dash=dash)), 1, 1)
    for col, dash, name in (("train_accuracy", None, "training accuracy"), ("val_accuracy", "dash", "validation accuracy"),
                            ("val_balanced_accuracy", "dot", "validation balanced accuracy")):
        if col in frame:
            fig.add_trace(go.Scatter(x=frame["epoch"], y=frame[col], name=name, line=dict(dash=dash)), 1, 2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=360)
    return with_toolbar_room(fig, subplot_titles=True)


def roc_pr_figure(curves: dict[str, Any], task: str) -> go.Figure:
    """ROC (with chance line) and precision-recall (with the prevalence line) for one binary task."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"ROC, AUROC {curves['auroc']:.3f}",
                                                        f"Precision-recall, AP {curves['average_precision']:.3f}"))
    roc, pr = curves["roc"], curves["pr"]
    fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], name="ROC", customdata=roc["threshold"],
                             hovertemplate="1-specificity %{x:.3f}<br>sensitivity %{y:.3f}<br>threshold %{customdata:.3f}"), 1, 1)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], name="chance", line=dict(dash="dot", color="grey")), 1, 1)
    fig.add_trace(go.Scatter(x=pr["recall"], y=pr["precision"], name="precision-recall", customdata=pr["threshold"],
                             hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>threshold %{customdata:.3f}"), 1, 2)
    fig.add_trace(go.Scatter(x=[0, 1], y=[curves["prevalence"]] * 2, name="prevalence",
                             line=dict(dash="dot", color="grey")), 1, 2)
    fig.update_xaxes(title_text="1 - specificity", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="sensitivity", range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="recall (sensitivity)", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="precision (PPV)", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=380, showlegend=False)
    return with_toolbar_room(fig, f"{task.capitalize()}: {curves['positives']} positives of {curves['n']} test images",
                             subplot_titles=True)


def operating_point(rows: list[dict[str, float]], target: float) -> dict[str, float]:
    """The stored operating point whose target sensitivity is closest to `target`."""
    if not rows:
        raise ValueError("no operating points stored")
    return min(rows, key=lambda r: abs(r["target_sensitivity"] - target))


def operating_figure(rows: list[dict[str, float]], chosen: dict[str, float], card_threshold: float | None) -> go.Figure:
    """Specificity (and share of cases referred) against target sensitivity, the chosen point marked."""
    frame = pd.DataFrame(rows)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=frame["sensitivity"], y=frame["specificity"], mode="lines+markers", name="specificity",
                             customdata=frame["threshold"],
                             hovertemplate="sensitivity %{x:.3f}<br>specificity %{y:.3f}<br>threshold %{customdata:.3f}"))
    fig.add_trace(go.Scatter(x=frame["sensitivity"], y=frame["referred_fraction"], mode="lines", name="share referred",
                             line=dict(dash="dot")))
    fig.add_trace(go.Scatter(x=[chosen["sensitivity"]], y=[chosen["specificity"]], mode="markers", name="chosen",
                             marker=dict(size=14, symbol="x", color="crimson")))
    title = "Test-split trade-off"
    if card_threshold is not None:
        title += f" (the Diagnose page refers at threshold {card_threshold:.3f})"
    fig.update_layout(xaxis_title="sensitivity for malignant lesions", yaxis_title="specificity / share referred",
                      yaxis_range=[0, 1.02], height=360)
    return with_toolbar_room(fig, title)


RISK_LABELS = {"top": "the top class's probability", "malignant": "malignant risk", "melanoma": "melanoma risk"}


def reliability_figure(reliability: dict[str, Any], risk: str) -> go.Figure:
    """Reliability diagram of one risk (`top`, `malignant`, `melanoma`) before and after calibration,
    with the diagonal of perfect calibration; each point's hover gives its count."""
    from core.model.calibration import ece_from_bins

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], name="perfect calibration", line=dict(dash="dot", color="grey")))
    for when, label in (("before", "before calibration"), ("after", "after (as shown to clinicians)")):
        bins = reliability[risk][when]
        fig.add_trace(go.Scatter(x=bins["confidence"], y=bins["accuracy"], mode="lines+markers",
                                 name=f"{label}: ECE {ece_from_bins(bins):.3f}", customdata=bins["count"],
                                 hovertemplate="stated %{x:.2f}<br>observed %{y:.2f}<br>%{customdata} images"))
    observed = "share correct" if risk == "top" else "observed share of such lesions"
    fig.update_layout(xaxis_title=f"stated {RISK_LABELS[risk]}", yaxis_title=observed, xaxis_range=[0, 1],
                      yaxis_range=[0, 1.02], height=360)
    return with_toolbar_room(fig, RISK_LABELS[risk].capitalize())


#: A subgroup metric resting on fewer positives than this is greyed and labelled.
MIN_POSITIVES = 10
SUBGROUP_METRICS = ("accuracy", "balanced_accuracy", "malignant_auroc", "melanoma_auroc", "malignant_sensitivity",
                    "malignant_specificity")
SUBGROUP_COLUMNS = {
    "group": "group", "n_images": "images", "n_lesions": "lesions", "malignant": "malignant", "melanoma": "melanomas",
    "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "malignant_auroc": "malignant AUROC",
    "melanoma_auroc": "melanoma AUROC", "malignant_sensitivity": "malignant sensitivity",
    "malignant_specificity": "malignant specificity",
}


def _positives_for(metric: str) -> str:
    return "melanoma" if metric.startswith("melanoma") else "malignant"


def subgroup_table(rows: list[dict[str, Any]], variable: str) -> pd.DataFrame:
    """One row per subgroup: counts, then each metric as 'value (low-high)'; a metric resting on
    fewer than MIN_POSITIVES positives is marked 'few positives'."""
    out = []
    for r in (r for r in rows if r["variable"] == variable):
        row = {SUBGROUP_COLUMNS[k]: r[k] for k in ("group", "n_images", "n_lesions", "malignant", "melanoma")}
        for metric in SUBGROUP_METRICS:
            text = interval_text(r[metric], r.get(f"{metric}_ci95")) if not pd.isna(r[metric]) else "not defined"
            if metric != "accuracy" and metric != "balanced_accuracy" and r[_positives_for(metric)] < MIN_POSITIVES:
                text += f" (few positives: {r[_positives_for(metric)]})"
            row[SUBGROUP_COLUMNS[metric]] = text
        out.append(row)
    return pd.DataFrame(out)


def subgroup_figure(rows: list[dict[str, Any]], variable: str, metric: str) -> go.Figure:
    """One metric by subgroup with its 95% interval; bars labelled with their counts, and greyed
    where the metric rests on fewer than MIN_POSITIVES positives."""
    frame = pd.DataFrame([r for r in rows if r["variable"] == variable])
    ci = np.array([r if isinstance(r, list) else [np.nan, np.nan] for r in frame[f"{metric}_ci95"]], dtype=float)
    positives = frame[_positives_for(metric)] if metric not in ("accuracy", "balanced_accuracy") else frame["n_images"]
    few = positives < MIN_POSITIVES
    text = [f"n={n}" + (f", {p} positives: unstable" if f else "") for n, p, f in zip(frame["n_images"], positives, few)]
    fig = go.Figure(go.Bar(x=frame["group"], y=frame[metric], text=text, textposition="outside",
                           marker_color=np.where(few, "rgb(200,200,200)", "rgb(31,119,180)"),
                           error_y=dict(type="data", symmetric=False, array=ci[:, 1] - frame[metric],
                                        arrayminus=frame[metric] - ci[:, 0], visible=True)))
    fig.update_layout(yaxis_title=SUBGROUP_COLUMNS.get(metric, metric), yaxis_range=[0, 1.15], xaxis_title=variable,
                      height=380)
    return with_toolbar_room(fig)


def comparison_table(results: dict[str, Any]) -> pd.DataFrame:
    """The comparison study's rows, with intervals as text, in the order they were defined."""
    rows = []
    for row in results.get("rows", []):
        if row.get("status") != "done":
            rows.append({"model": row["label"], "status": row.get("status", "not run"), "note": row.get("note", "")})
            continue
        m = row["metrics"]
        rows.append({
            "model": row["label"], "status": "done",
            "accuracy": interval_text(m["accuracy"], m.get("accuracy_ci95")),
            "balanced accuracy": interval_text(m["balanced_accuracy"], m.get("balanced_accuracy_ci95")),
            "melanoma AUROC": interval_text(m["melanoma_auroc"], m.get("melanoma_auroc_ci95")),
            "malignant sensitivity at 80% specificity": interval_text(m["malignant_sens_at_80_spec"],
                                                                      m.get("malignant_sens_at_80_spec_ci95")),
            "trainings (seeds)": _trainings_text(row.get("trainings")),
            "training time": _training_text(row),
            "inference per image (ms)": _latency(row),
            "5-fold CV balanced accuracy": _cv_text(row.get("cv")),
            "note": row.get("note", ""),
        })
    return pd.DataFrame(rows)


COMPARISON_METRICS = {"balanced_accuracy": "balanced accuracy", "melanoma_auroc": "melanoma AUROC",
                      "malignant_sens_at_80_spec": "malignant sens. at 80% spec."}


def comparison_figure(results: dict[str, Any]) -> go.Figure | None:
    """The evaluated rows side by side, one panel per headline metric, each point with its 95% interval
    (overlapping intervals: the test split cannot tell those models apart). None if no row is evaluated."""
    done = [r for r in results.get("rows", []) if r.get("status") == "done"]
    if not done:
        return None
    fig = make_subplots(rows=1, cols=len(COMPARISON_METRICS), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=list(COMPARISON_METRICS.values()))
    ids = [r.get("id", r["label"]) for r in done]  # short names on the axis, the full label on hover
    for col, key in enumerate(COMPARISON_METRICS, start=1):
        values = np.array([r["metrics"][key] for r in done], dtype=float)
        ci = [r["metrics"].get(f"{key}_ci95") or (np.nan, np.nan) for r in done]
        lo, hi = (np.array([c[i] if c[i] is not None else np.nan for c in ci], dtype=float) for i in (0, 1))
        fig.add_trace(go.Scatter(x=values, y=ids, mode="markers", marker={"size": 10, "color": "#1f4e79"},
                                 showlegend=False, customdata=[r["label"] for r in done],
                                 error_x={"type": "data", "symmetric": False, "array": hi - values,
                                          "arrayminus": values - lo, "color": "#1f4e79"},
                                 hovertemplate="%{customdata}<br>%{x:.3f}<extra></extra>"), row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=120 + 60 * len(done))
    return with_toolbar_room(fig, subplot_titles=True, bottom=30)


DIFFERENCE_METRICS = {"balanced_accuracy": "balanced accuracy", "melanoma_auroc": "melanoma AUROC",
                      "malignant_auroc": "malignant AUROC"}


VERDICT_COLOURS = {"tie": "#9a9a9a", "unconfirmed": "#c07a00"}


def verdict_of(difference: dict[str, Any]) -> str:
    """A stored difference's verdict (written with its training count), else the interval's."""
    return difference.get("verdict") or difference_verdict(*difference["ci95"])


def trainings_each(difference: dict[str, Any]) -> str:
    """'1 training each', '2 trainings each': what an unconfirmed difference rests on."""
    n = difference.get("trainings") or 1
    return f"{n} training{'s' if n > 1 else ''} each"


def verdict_label(difference: dict[str, Any]) -> str:
    """The word beside a point of the difference plot: 'tie', the trainings of an unconfirmed one, or none."""
    verdict = verdict_of(difference)
    return {"tie": "tie", "unconfirmed": trainings_each(difference)}.get(verdict, "")


def difference_figure(differences: list[dict[str, Any]]) -> go.Figure:
    """Paired differences (A - B, both scored on the same test images), one panel per metric, each
    with its lesion-bootstrap 95% interval and a line at 0. A difference whose interval holds 0 is a
    tie: drawn grey and labelled so; one between models with too few trainings to claim it is
    "unconfirmed": drawn amber and labelled with that."""
    comparisons = list(dict.fromkeys(d["comparison"] for d in differences))
    fig = make_subplots(rows=1, cols=len(DIFFERENCE_METRICS), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=list(DIFFERENCE_METRICS.values()))
    for col, key in enumerate(DIFFERENCE_METRICS, start=1):
        rows = {d["comparison"]: d for d in differences if d["metric"] == key}
        shown = [c for c in comparisons if c in rows]
        diff = np.array([rows[c]["difference"] for c in shown], dtype=float)
        lo, hi = (np.array([rows[c]["ci95"][i] for c in shown], dtype=float) for i in (0, 1))
        verdicts = [verdict_of(rows[c]) for c in shown]
        fig.add_trace(go.Scatter(x=diff, y=shown, mode="markers+text", showlegend=False,
                                 marker={"size": 10, "color": [VERDICT_COLOURS.get(v, "#1f4e79") for v in verdicts]},
                                 text=[verdict_label(rows[c]) for c in shown], textposition="top center",
                                 error_x={"type": "data", "symmetric": False, "array": hi - diff,
                                          "arrayminus": diff - lo, "color": "#555555"},
                                 hovertemplate="%{y}<br>%{x:+.3f}<extra></extra>"), row=1, col=col)
        fig.add_vline(x=0, line_dash="dot", line_color="#b03a2e", row=1, col=col)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=140 + 70 * len(comparisons))
    return with_toolbar_room(fig, subplot_titles=True, bottom=30)


def _latency(row: dict[str, Any]) -> str:
    if row.get("infer_seconds_per_image") is None:
        return "n/a"
    threads = row.get("infer_threads")
    return f"{1000 * row['infer_seconds_per_image']:.1f}" + (f" on {_threads(threads)}" if threads else "")


def _trainings_text(trainings: list[dict[str, Any]] | None) -> str:
    """'1', or '3: balanced accuracy 0.571 +- 0.020' (mean +- sd over the row's trainings)."""
    if not trainings or len(trainings) == 1:
        return "1"
    values = np.array([t["balanced_accuracy"] for t in trainings], dtype=float)
    return f"{len(values)}: balanced accuracy {values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _training_text(row: dict[str, Any]) -> str:
    """'60.0 min (15 epochs, 1 thread)', with whatever of the epochs and threads the row records."""
    extra = [f"{row['epochs_run']} epochs"] if row.get("epochs_run") else []
    threads = row.get("train_threads")
    extra += [_threads(threads)] if threads else []
    return _duration(row.get("train_seconds")) + (f" ({', '.join(extra)})" if extra else "")


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cv_text(cv: dict[str, Any] | None) -> str:
    if not cv:
        return "not run"
    if cv.get("status") != "done":
        return cv.get("note", "not run")
    return f"{cv['balanced_accuracy_mean']:.3f} +- {cv['balanced_accuracy_sd']:.3f} ({cv['folds']} folds)"
