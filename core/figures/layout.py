"""Margins and title placement shared by every plotly figure the pages draw.

Plotly draws its toolbar (the modebar: zoom, pan, download as PNG) over the top-right corner
of a figure, 2 px from the top and about 26 px tall. A title in plotly's default place (the
middle of the top margin) or subplot titles in a thin top margin end up under it. So every
figure keeps a band of MODEBAR_PX free at the top, puts its title just below that band and
any row of subplot titles below the title: nothing the reader needs sits under the toolbar.
"""
from __future__ import annotations

import plotly.graph_objects as go

MODEBAR_PX = 32
TITLE_PX = 28
SUBPLOT_TITLES_PX = 24
SIDE_PX = 10
#: plotly's height when a figure sets none.
DEFAULT_HEIGHT = 450


def margins(title: bool = False, subplot_titles: bool = False, bottom: int = SIDE_PX) -> dict[str, int]:
    """Figure margins with the top band for the toolbar, plus rows for a title and subplot titles."""
    top = MODEBAR_PX + TITLE_PX * bool(title) + SUBPLOT_TITLES_PX * bool(subplot_titles)
    return {"l": SIDE_PX, "r": SIDE_PX, "t": top, "b": bottom}


def title_below_toolbar(text: str, height: float | None) -> dict:
    """A title anchored just under the toolbar's band (in pixels, whatever the figure's height)."""
    return {"text": text, "yref": "container", "yanchor": "top", "y": 1 - MODEBAR_PX / (height or DEFAULT_HEIGHT)}


def with_toolbar_room(fig: go.Figure, title: str | None = None, subplot_titles: bool = False,
                      bottom: int = SIDE_PX) -> go.Figure:
    """Set the margins and place the title (if any) so the toolbar covers neither; set the height first."""
    fig.update_layout(margin=margins(bool(title), subplot_titles, bottom))
    if title:
        fig.update_layout(title=title_below_toolbar(title, fig.layout.height))
    return fig
