"""The app's entry point (`streamlit run app.py`): one menu, built with st.navigation, Home first.

Every page is a script in app_pages/, listed here with its title and a material icon (drawn from
Streamlit's own icon font, so no emoji font is needed). The folder is deliberately not called
pages/: while a pages/ folder sits beside the entry point, a fresh server answers a deep link
(/Diagnose) the old way, running the page script alone under Streamlit's automatic menu (with the
home page listed as "app") instead of this one. The URL paths are the ones that menu used, so old
links keep working. Before anything runs, ui.upload_race guards the file uploader against a
Streamlit race that loses uploads on a busy server.
"""
from __future__ import annotations

import streamlit as st

from ui.upload_race import keep_upload_answers

keep_upload_answers()  # once per server process: see ui/upload_race.py
st.set_page_config(page_icon=":material/biotech:", layout="wide")
st.navigation([
    st.Page("app_pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/1_Diagnose.py", title="Diagnose", icon=":material/stethoscope:", url_path="Diagnose"),
    st.Page("app_pages/2_Dataset_Explorer.py", title="Dataset explorer", icon=":material/bar_chart:",
            url_path="Dataset_Explorer"),
    st.Page("app_pages/3_Explanations.py", title="Explanations", icon=":material/lightbulb:", url_path="Explanations"),
    st.Page("app_pages/4_Model_Performance.py", title="Model performance", icon=":material/monitoring:",
            url_path="Model_Performance"),
    st.Page("app_pages/5_Validate.py", title="Validate", icon=":material/fact_check:", url_path="Validate"),
]).run()
