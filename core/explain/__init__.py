"""Why the model says what it says: class activation maps, permutation importance and SHAP, heatmap-guided input."""
