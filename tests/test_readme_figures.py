"""The README's test-results table says what the committed cards say (figures to 3 decimals)."""
from __future__ import annotations

import re

import pytest

from core import config
from core.model.bundle import read_card

ROWS = {"fusion-lite0 (metadata given)": ("fusion-lite0", "all_inputs"),
        "fusion-lite0 (all metadata withheld)": ("fusion-lite0", "metadata_withheld"),
        "fusion-lite0 (square centre crops, metadata given)": ("fusion-lite0", "centre_crop"),
        "image-lite0 (same recipe, no metadata)": ("image-lite0", "all_inputs"),
        "image-lite0 (square centre crops)": ("image-lite0", "centre_crop")}


def readme_rows() -> dict[str, list[str]]:
    text = (config.REPO_ROOT / "README.md").read_text()
    section = text.split("### Test results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in (line for line in section.splitlines() if line.startswith("|")):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in ROWS:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("label", list(ROWS))
def test_readme_table_equals_the_card(label):
    rows = readme_rows()
    assert label in rows, f"README test-results table has no row for {label}"
    bundle, view = ROWS[label]
    m = read_card(config.WEIGHTS_DIR / bundle)["metrics"][view]
    bacc, mel, mal, sens_spec = rows[label]
    assert bacc == f"{m['balanced_accuracy']:.3f}"
    for cell, task in ((mel, "melanoma"), (mal, "malignant")):
        t = m[task]
        assert cell == f"{t['auroc']:.3f} ({t['auroc_ci95'][0]:.3f}-{t['auroc_ci95'][1]:.3f})"
    assert re.sub(r"\s", "", sens_spec) == f"{m['malignant']['sensitivity']:.3f}/{m['malignant']['specificity']:.3f}"
