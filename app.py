"""The app's entry point (`streamlit run app.py`): the page menu, with the home page first."""
from __future__ import annotations

import streamlit as st

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon="🏠", url_path="Home", default=True),
    st.Page("pages/1_Diagnose.py", title="Diagnose", icon="🔬", url_path="Diagnose"),
    st.Page("pages/2_Dataset_Explorer.py", title="Dataset explorer", icon="📊", url_path="Dataset_Explorer"),
    st.Page("pages/3_Explanations.py", title="Explanations", icon="💡", url_path="Explanations"),
    st.Page("pages/4_Model_Performance.py", title="Model performance", icon="📈", url_path="Model_Performance"),
]

st.navigation(PAGES).run()
