"""The training data explored: the Dataset explorer's tables, the stored dataset statistics, the gallery."""
