"""Model performance: the model card for a clinician, test metrics, operating points, calibration,
subgroups, and the comparison study. Everything comes from stored aggregates: no dataset needed."""
from __future__ import annotations

import streamlit as st

from ui import performance as section
from ui.loaders import card_or_stop

st.set_page_config(page_title="Model performance - dermoscopy decision support", layout="wide")
st.title("Model performance")

card = card_or_stop()
section.model_card_section(card)
metrics = card.get("metrics", {})
if not metrics.get("all_inputs"):
    st.info("This model card holds no test metrics. Run `make card` (python -m core.model.evaluate --write-card) with "
            "the dataset present.")
    st.stop()
section.test_metrics_section(card)
agg = metrics.get("aggregates")
if not agg:
    st.info("Curves, operating points, calibration and subgroups are not in this card yet: run `make card`.")
    st.stop()
section.curves_section(agg)
section.operating_point_section(card, agg)
section.calibration_section(agg)
section.subgroups_section(agg)
section.paired_differences_section()
section.comparison_section()
