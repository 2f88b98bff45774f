"""Dataset explorer: the second paper's exploratory analysis as interactive charts.

Data source: DERMO_DATA_DIR, a typed path, an uploaded metadata CSV, or the statistics stored
with the default model (see ui/explorer.py).
"""
from __future__ import annotations

import streamlit as st

from core.errors import InputError
from ui import explorer, explorer_views

st.set_page_config(page_title="Dataset explorer", layout="wide")
st.title("Dataset explorer")

try:
    source = explorer.choose_source()
except InputError as exc:
    st.error(f"This data source cannot be explored: {exc}")
    st.info(explorer.HOW_TO_GET_DATA)
    st.stop()

if source is None:
    st.info("Choose the data in the sidebar. " + explorer.HOW_TO_GET_DATA)
    st.stop()

if source.stats is not None:
    st.info(f"No dataset is configured, so this page shows the statistics stored with the default model "
            f"({source.label}). {explorer.HOW_TO_GET_DATA}")
else:
    st.caption(f"Source: {source.label} ({source.layout}). HAM10000 and ISIC 2020 are CC BY-NC 4.0.")

filters = explorer.sidebar_filters(source)
SECTIONS = {
    "Charts": explorer_views.charts,
    "Data quality": lambda s, f: explorer_views.quality(s),
    "Image gallery": explorer_views.gallery,
    "Transformations": explorer_views.transformations,
}
section = st.radio("Section", list(SECTIONS), horizontal=True, key="explorer_section", label_visibility="collapsed")
try:
    SECTIONS[section](source, filters)
except InputError as exc:
    st.error(str(exc))
