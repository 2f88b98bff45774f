"""Plotly figures for the Dataset explorer, each drawn from one table of `core.eda.tables` only."""
from __future__ import annotations

from typing import Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.data.metadata import UNKNOWN
from core.eda.tables import BENIGN, CHANNEL_COLOURS, MALIGNANT_LABEL
from core.figures.layout import with_toolbar_room

GROUP_COLOURS = {BENIGN: "#4C78A8", MALIGNANT_LABEL: "#E45756"}
SEX_COLOURS = {"female": "#B279A2", "male": "#72B7B2", UNKNOWN: "#BAB0AC"}


# Built with graph_objects rather than plotly.express: express costs ~70 ms a figure, which
# would eat the 1 s budget for re-rendering ten charts after a filter change.
def _layout(fig: go.Figure, title: str, subplot_titles: bool = False, **kw) -> go.Figure:
    fig.update_layout(height=kw.pop("height", 380), legend_title_text=kw.pop("legend", None), **kw)
    return with_toolbar_room(fig, title, subplot_titles)


def _bars(table: pd.DataFrame, x: str, y: str, color: str | None = None, colours: Mapping[str, str] | None = None,
          text: list[str] | None = None, horizontal: bool = False, custom: str | None = None) -> go.Figure:
    """One bar trace per value of `color` (or a single trace), grouped side by side."""
    fig = go.Figure()
    text = text if text is not None else [None] * len(table)
    table = table.assign(_text=text)
    groups = table.groupby(color, sort=False) if color else [(None, table)]
    for name, rows in groups:
        a, b = (rows[y], rows[x]) if horizontal else (rows[x], rows[y])
        hover = f"%{{{'y' if horizontal else 'x'}}}: %{{{'x' if horizontal else 'y'}:,}}"
        if custom:
            hover += f"<br>{custom}: %{{customdata:.1f}}"
        fig.add_trace(go.Bar(
            x=b if horizontal else a, y=a if horizontal else b, name=str(name) if name is not None else y,
            orientation="h" if horizontal else "v", text=rows["_text"], textposition="outside", cliponaxis=False,
            marker_color=(colours or {}).get(name) if name is not None else None,
            customdata=rows[custom] if custom else None, hovertemplate=hover + "<extra>%{fullData.name}</extra>",
        ))
    fig.update_layout(barmode="group", showlegend=color is not None)
    if horizontal:
        fig.update_yaxes(categoryorder="array", categoryarray=list(dict.fromkeys(table[y]))[::-1])
    else:
        fig.update_xaxes(categoryorder="array", categoryarray=list(dict.fromkeys(table[x])))
    return fig


def _count_text(table: pd.DataFrame) -> list[str]:
    return [f"{c:,} ({p:.1f}%)" for c, p in zip(table["count"], table["percent"])]


def fig_classes(table: pd.DataFrame) -> go.Figure:
    """Horizontal bars, so the diagnoses' full names read without rotation (model's class order, top down)."""
    fig = _bars(table, "count", "name", "group", GROUP_COLOURS, _count_text(table), horizontal=True, custom="percent")
    return _layout(fig, "Diagnosis class distribution", xaxis_title="images", yaxis_title=None,
                   barmode="relative", height=max(380, 40 * len(table) + 100))


def fig_sex(table: pd.DataFrame) -> go.Figure:
    fig = _bars(table, "sex", "count", "sex", SEX_COLOURS, _count_text(table), custom="percent")
    return _layout(fig, "Sex distribution", yaxis_title="images", showlegend=False, barmode="relative")


def fig_malignancy_by_sex(table: pd.DataFrame) -> go.Figure:
    fig = _bars(table, "sex", "count", "group", GROUP_COLOURS, _count_text(table), custom="percent")
    return _layout(fig, "Benign vs malignant by sex", yaxis_title="images")


def fig_sites(table: pd.DataFrame) -> go.Figure:
    fig = _bars(table, "percent", "site", text=[f"{p:.1f}%" for p in table["percent"]], horizontal=True)
    return _layout(fig, "Body-site distribution", xaxis_title="% of images", yaxis_title=None,
                   height=max(380, 24 * len(table) + 100))


def fig_site_sex(table: pd.DataFrame, target: str = "melanoma") -> go.Figure:
    fig = _bars(table, "count", "site", "sex", SEX_COLOURS, horizontal=True)
    return _layout(fig, f"{target.capitalize()} count by body site and sex", xaxis_title=f"{target} images",
                   yaxis_title=None, height=max(380, 40 * table["site"].nunique() + 100))


def fig_age(table: pd.DataFrame, by: str | None = None, percent: bool = False) -> go.Figure:
    y = "percent" if percent else "count"
    fig = _bars(table, "label", y, by, GROUP_COLOURS if by == "group" else SEX_COLOURS)
    title = {None: "Age distribution", "group": "Age distribution: benign vs malignant",
             "sex": "Age distribution by sex"}[by]
    return _layout(fig, title, xaxis_title="age (years)", yaxis_title="% of the group" if percent else "images")


def fig_colour(table: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=3, subplot_titles=list(CHANNEL_COLOURS), shared_yaxes=True)
    for c, channel in enumerate(CHANNEL_COLOURS, start=1):
        for group, rows in table[table["channel"] == channel].groupby("group", sort=False):
            fig.add_trace(go.Scatter(x=rows["intensity"], y=rows["fraction"], mode="lines", name=group,
                                     line=dict(color=GROUP_COLOURS[group]), legendgroup=group, showlegend=c == 1),
                          row=1, col=c)
        fig.update_xaxes(title_text=f"{channel} intensity", range=[0, 255], row=1, col=c)
    fig.update_yaxes(title_text="share of pixels", row=1, col=1)
    return _layout(fig, "Red, green and blue intensity: benign vs malignant", subplot_titles=True)


def fig_dx_type(table: pd.DataFrame) -> go.Figure:
    """Stacked horizontal bars: each diagnosis (by name), split by how it was confirmed (in words)."""
    fig = _bars(table, "count", "name", "confirmed by", horizontal=True, custom="percent")
    return _layout(fig, "Diagnosis confirmation type by class", xaxis_title="images", yaxis_title=None,
                   legend="confirmed by", barmode="stack", height=max(380, 40 * table["name"].nunique() + 100))


def fig_lesions(per_lesion: pd.Series) -> go.Figure:
    table = per_lesion.reset_index()
    table["images"] = table["images"].astype(str)
    fig = _bars(table, "images", "lesions", text=[f"{v:,}" for v in table["lesions"]])
    return _layout(fig, "Images per lesion", xaxis_title="images of the same lesion", yaxis_title="lesions")
