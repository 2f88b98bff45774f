"""The app's entry point (`streamlit run app.py`): one menu, built with st.navigation, Home first.

Every page is a script in pages/ listed here with its title and a material icon (rendered from
Streamlit's own icon font, so no emoji font is needed). Because st.navigation is called, Streamlit
does not also build its automatic menu from pages/: a deep link to any page shows this menu alone.
The URL paths are the ones the automatic menu used, so old links keep working.
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_icon=":material/biotech:", layout="wide")
st.navigation([
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Diagnose.py", title="Diagnose", icon=":material/stethoscope:", url_path="Diagnose"),
    st.Page("pages/2_Dataset_Explorer.py", title="Dataset explorer", icon=":material/bar_chart:",
            url_path="Dataset_Explorer"),
    st.Page("pages/3_Explanations.py", title="Explanations", icon=":material/lightbulb:", url_path="Explanations"),
    st.Page("pages/4_Model_Performance.py", title="Model performance", icon=":material/monitoring:",
            url_path="Model_Performance"),
    st.Page("pages/5_Validate.py", title="Validate", icon=":material/fact_check:", url_path="Validate"),
]).run()
