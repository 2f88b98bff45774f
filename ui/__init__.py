"""The only Streamlit-aware helpers: cached loaders and shared widgets."""
