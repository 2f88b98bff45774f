"""Dermoscopy decision support: model, data pipeline, training and inference (no Streamlit here)."""
