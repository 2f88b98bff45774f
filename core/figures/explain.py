"""Plotly figures for the Explanations page (permutation importance, SHAP), from stored or live results.

Pure functions (no streamlit), so the page stays a thin script and the figures are testable.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures.layout import with_toolbar_room

METRIC_LABELS = {"balanced_accuracy": "balanced accuracy", "melanoma_auroc": "melanoma AUROC"}
#: Red pushes towards the class, blue away (the second paper's convention).
DIVERGING = [[0.0, "rgb(33,102,172)"], [0.5, "rgb(247,247,247)"], [1.0, "rgb(178,24,43)"]]
#: The risks `core.explain.importance.output_groups` adds to the classes, as the Diagnose page words them.
RISK_NAMES = {"melanoma": "Melanoma risk", "malignant": "Malignant risk (sum of the malignant classes)"}
CAM_COLUMNS = {"road_combined": "ROAD combined (higher = more faithful)",
               "confidence_change": "confidence change, image x CAM (higher = better)", "seconds": "CAM time (s)"}


def output_name(output: str, class_names: Mapping[str, str]) -> str:
    """What an explained output is called on the page: a class's name, or the risk it stands for."""
    return class_names.get(output) or RISK_NAMES.get(output, output)


def cam_table(table: pd.DataFrame) -> pd.DataFrame:
    """`core.explain.importance.cam_faithfulness`'s scores with column names that say which way is better."""
    return table.rename(columns=CAM_COLUMNS)


def permutation_figure(rows: list[dict[str, Any]], metric: str) -> go.Figure:
    """Drop in `metric` when each input is shuffled: bars with their lesion-bootstrap 95% intervals;
    an input whose interval contains 0 is labelled "no measurable importance"."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["metric"] == metric].sort_values("drop_mean", ascending=True)
    labels = [f"{f} (no measurable importance)" if not m else f for f, m in zip(frame["feature"], frame["measurable"])]
    fig = go.Figure(go.Bar(x=frame["drop_mean"], y=labels, orientation="h",
                           error_x=dict(type="data", symmetric=False, visible=True,
                                        array=frame["ci95_high"] - frame["drop_mean"],
                                        arrayminus=frame["drop_mean"] - frame["ci95_low"]),
                           marker_color=np.where(frame["kind"] == "image", "rgb(178,24,43)", "rgb(33,102,172)")))
    label = METRIC_LABELS.get(metric, metric)
    fig.update_layout(xaxis_title=f"drop in {label} when shuffled (95% interval)", height=max(260, 40 * len(frame) + 100))
    return with_toolbar_room(fig)


def shap_bar_figure(entry: dict[str, Any], output: str) -> go.Figure:
    """Mean |SHAP| per metadata field: how far, on average, each entered field moves the output (named)."""
    items = sorted(entry["mean_abs"].items(), key=lambda kv: kv[1])
    fig = go.Figure(go.Bar(x=[v for _, v in items], y=[k for k, _ in items], orientation="h"))
    fig.update_layout(xaxis_title=f"mean |SHAP| on the estimate: {output}", height=260)
    return with_toolbar_room(fig)


def _colour_values(values: list[str]) -> tuple[np.ndarray, bool]:
    """Numeric colour for each point: the value itself if numeric (age), else a category index."""
    numeric = pd.to_numeric(pd.Series(values), errors="coerce")
    if numeric.notna().mean() > 0.5:
        return numeric.to_numpy(dtype=float), True
    cats = sorted(set(values))
    return np.array([cats.index(v) for v in values], dtype=float), False


def beeswarm_figure(entry: dict[str, Any], output: str, seed: int = 0) -> go.Figure:
    """Beeswarm-style: one dot per case per field at its SHAP value, jittered, coloured by the field's value."""
    rng = np.random.default_rng(seed)
    fields = list(entry["beeswarm"])
    fig = go.Figure()
    for row, field in enumerate(fields):
        data = entry["beeswarm"][field]
        colours, numeric = _colour_values(data["value"])
        fig.add_trace(go.Scatter(
            x=data["shap"], y=row + rng.uniform(-0.3, 0.3, len(data["shap"])), mode="markers", name=field,
            text=[f"{field} = {v}" for v in data["value"]], hovertemplate="%{text}<br>SHAP %{x:.4f}<extra></extra>",
            marker=dict(size=5, color=colours, colorscale="Viridis" if numeric else "Turbo", opacity=0.7,
                        showscale=numeric, colorbar=dict(title=field) if numeric else None),
        ))
    fig.add_vline(x=0, line_color="grey")
    fig.update_layout(yaxis=dict(tickvals=list(range(len(fields))), ticktext=fields), showlegend=False,
                      xaxis_title=f"SHAP value on the estimate: {output} (> 0: the entered field raised it)",
                      height=120 + 90 * len(fields))
    return with_toolbar_room(fig)


def by_value_table(entry: dict[str, Any], field: str) -> pd.DataFrame:
    frame = pd.DataFrame(entry["by_value"][field])
    return frame.sort_values("mean_shap", ascending=False).rename(columns={"value": field, "mean_shap": "mean SHAP"})


def waterfall_figure(values: np.ndarray, base: float, labels: list[str], output: str) -> go.Figure:
    """From the prediction with metadata withheld, each entered field's push, to the final prediction
    (`output`: the explained output's displayed name)."""
    final = base + float(np.sum(values))
    fig = go.Figure(go.Waterfall(
        orientation="v", measure=["absolute", *["relative"] * len(values), "total"],
        x=["metadata withheld", *labels, "with metadata"], y=[base, *values.tolist(), final],
        text=[f"{base:.3f}", *[f"{v:+.3f}" for v in values], f"{final:.3f}"], textposition="outside",
        increasing=dict(marker_color="rgb(178,24,43)"), decreasing=dict(marker_color="rgb(33,102,172)"),
        totals=dict(marker_color="grey"),
    ))
    top = max(base, final, base + float(np.clip(values, 0, None).sum()))
    fig.update_layout(yaxis_title=f"estimate: {output}", yaxis_range=[0, min(1.0, top * 1.25 + 0.02)], height=360)
    return with_toolbar_room(fig)


def image_shap_figure(pixels: np.ndarray, maps: np.ndarray, titles: list[str], smooth: float = 2.0) -> go.Figure:
    """The image as the model saw it, then one SHAP map per class (red towards, blue away), same scale."""
    import cv2

    shown = [cv2.GaussianBlur(m, (0, 0), smooth) if smooth > 0 else m for m in maps]
    limit = float(max(np.abs(m).max() for m in shown)) or 1.0
    fig = make_subplots(rows=1, cols=1 + len(shown), subplot_titles=["image", *titles], horizontal_spacing=0.02)
    fig.add_trace(go.Image(z=pixels), 1, 1)
    for i, m in enumerate(shown):
        fig.add_trace(go.Heatmap(z=m, zmin=-limit, zmax=limit, colorscale=DIVERGING, showscale=i == len(shown) - 1,
                                 colorbar=dict(title="SHAP")), 1, i + 2)
    fig.update_xaxes(visible=False)
    for col in range(1, len(shown) + 2):
        fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x" if col == 1 else f"x{col}", row=1, col=col)
    fig.update_layout(height=320)
    return with_toolbar_room(fig, subplot_titles=True)
