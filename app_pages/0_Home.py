"""Home: intended use, disclaimer and the default model's card summary (the menu's first entry, see app.py)."""
from __future__ import annotations

import streamlit as st

from ui.loaders import card_or_stop

st.set_page_config(page_title="Dermoscopy decision support", layout="wide")
st.title("Dermoscopy decision support")
st.markdown(
    "Upload a dermoscopic image of a skin lesion, with the patient's age, sex and the body site, "
    "to see the probability of each of seven diagnoses, the risk that the lesion is malignant or a melanoma, "
    "and where the model looked.\n\n"
    "**Intended use.** Decision support for clinicians trained in dermoscopy. It is not a screening tool and "
    "does not make a diagnosis: the decision to refer, biopsy or reassure stays with the clinician."
)
st.warning(
    "Research prototype. Trained on HAM10000 (CC BY-NC 4.0, non-commercial use only): mostly fair-skinned "
    "patients from Austria and Australia, 200x150 images. Performance on other populations and cameras is unknown."
)

card = card_or_stop()

st.subheader(f"Model: {card['name']} (version {card.get('version', '?')})")
metrics = card.get("metrics", {}).get("all_inputs")
if metrics:
    cols = st.columns(4)
    cols[0].metric("Balanced accuracy", f"{metrics['balanced_accuracy']:.3f}")
    cols[1].metric("Melanoma AUROC", f"{metrics['melanoma']['auroc']:.3f}")
    cols[2].metric("Malignant AUROC", f"{metrics['malignant']['auroc']:.3f}")
    cols[3].metric("Test images", f"{metrics['n_images']}")
    st.caption(
        f"On a lesion-grouped test split ({metrics['n_lesions']} lesions never seen in training). "
        "See Model performance for intervals, subgroups and calibration."
    )
else:
    st.info("This model's card has no test metrics.")
