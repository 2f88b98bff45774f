"""Checks shared by the page tests: every plotly chart leaves the toolbar's band at the top free."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.figures.layout import MODEBAR_PX, SUBPLOT_TITLES_PX, TITLE_PX


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def assert_toolbar_room(at: AppTest) -> None:
    """No chart puts its title, its subplot titles or its plot area under plotly's toolbar."""
    for spec in chart_specs(at):
        layout = spec["layout"]
        top = layout["margin"]["t"]
        assert top >= MODEBAR_PX
        title = layout.get("title", {})
        if title.get("text"):
            assert title["yref"] == "container" and title["yanchor"] == "top"
            assert (1 - title["y"]) * layout["height"] == pytest.approx(MODEBAR_PX)
            assert top >= MODEBAR_PX + TITLE_PX
        if any(a.get("yanchor") == "bottom" and a.get("yref") == "paper" for a in layout.get("annotations", [])):
            assert top >= MODEBAR_PX + SUBPLOT_TITLES_PX  # subplot titles sit above the plot area
