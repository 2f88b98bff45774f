"""The Validate page under streamlit's AppTest: a folder in the data root and a ZIP upload scored end
to end; a dangerous ZIP, a folder leading outside the root and a CSV without labels refused."""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from tests.test_quality import lesion_like

PAGE = str(Path(__file__).resolve().parent.parent / "app_pages" / "5_Validate.py")
TIMEOUT = 180  # the first run imports torch
LABELS = ["Melanoma", "Common Nevus", "Atypical Nevus", "Melanoma", "Seborrheic keratosis", "nv", "Melanoma", "bcc"]


def write_set(folder: Path, labels: list[str] = LABELS, csv_name: str = "labels.csv", label_col: str = "diagnosis") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [f"lesion{i:02d}" for i in range(len(labels))]
    for image_id in ids:
        Image.fromarray(lesion_like(rng)).save(folder / f"{image_id}.jpg", quality=90)
    pd.DataFrame({"image": ids, label_col: labels, "age": [30 + 5 * i for i in range(len(labels))],
                  "sex": ["F", "M"] * (len(labels) // 2), "site": ["back", "anterior torso"] * (len(labels) // 2)}
                 ).to_csv(folder / csv_name, index=False)


def zip_of(folder: Path) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    return out.getvalue()


@pytest.fixture
def page(tiny_bundle, tmp_path, monkeypatch):
    """A fresh session serving the tiny bundle, with a data root holding one clinic set."""
    root = tmp_path / "root"
    write_set(root / "clinic")
    monkeypatch.setenv("DERMO_MODEL_DIR", str(tiny_bundle))
    monkeypatch.setenv("DERMO_DATA_DIR", str(root))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception and not at.error
    return at


def errors(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


def frame(at: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page with this column (AppTest does not expose dataframe keys)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def choose_folder(at: AppTest, folder: str) -> AppTest:
    at.radio(key="validate_source").set_value("A folder in the data folder").run()
    return at.selectbox(key="validate_folder").set_value(folder).run()


def score(at: AppTest) -> AppTest:
    at.number_input(key="validate_bootstrap").set_value(20)  # intervals are not the point here: keep it fast
    return at.button(key="validate_run").click().run()


def test_a_folder_in_the_data_root_is_scored_with_every_section(page):
    at = choose_folder(page, "clinic")
    assert not at.exception and not errors(at)
    assert any("8 images to score" in m.value and "mel 3" in m.value for m in at.markdown)
    at = score(at)
    assert not at.exception and not errors(at)
    table, per_class, subgroups = (frame(at, column) for column in ("metric", "class", "group"))
    assert len(per_class) == 7 and set(subgroups["group"]) == {"female", "male"}
    assert table["metric"].iloc[1] == "balanced accuracy (bcc, bkl, mel, nv)"
    charts = {c.key for c in at.get("plotly_chart")}
    assert {"validate_headline", "validate_confusion", "validate_reliability", "validate_subgroup_chart"} <= charts
    assert {b.key for b in at.get("download_button")} == {"validate_download_csv", "validate_download_pdf",
                                                          "validate_download_json"}
    at.radio(key="validate_confusion_mode").set_value("Row-normalised").run()
    at.selectbox(key="validate_subgroup_by").set_value("body site").run()
    assert set(frame(at, "group")["group"]) == {"back", "torso"}
    assert not at.exception and not errors(at) and len(at.get("download_button")) == 3


def test_a_zip_upload_with_a_label_map_is_never_unpacked_to_disk(page, tmp_path, monkeypatch):
    labels = ["Klasse A", "Klasse B", "Klasse B", "Klasse A", "Klasse B", "Klasse B"]
    write_set(tmp_path / "upload" / "my set", labels, csv_name="truth.csv", label_col="befund")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile re-reads TMPDIR
    at = page
    at.file_uploader(key="validate_zip").set_value(("set.zip", zip_of(tmp_path / "upload" / "my set"), "application/zip"))
    at.run()
    assert "No column holds labels the model knows" in errors(at)
    mapping = json.dumps({"Klasse A": "mel", "Klasse B": "nv"}).encode()
    at.file_uploader(key="validate_label_map").set_value(("map.json", mapping, "application/json")).run()
    assert not at.exception and not errors(at)
    assert any("6 images to score" in m.value and "mel 2, nv 4" in m.value for m in at.markdown)
    at = score(at)
    assert not at.exception and not errors(at)
    per_class = frame(at, "class")
    assert per_class.loc[per_class["class"].str.endswith("(df)"), "recall"].item() == "not defined"
    assert not any((tmp_path / "tmp").iterdir())  # scored from memory: no temporary copy of the images


@pytest.mark.parametrize("member, message", [("../escape.csv", "escapes its folder"),
                                             ("/etc/evil.csv", "escapes its folder")])
def test_a_dangerous_zip_is_refused(page, member, message):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(member, "image,dx\na,mel\n")
    at = page
    at.file_uploader(key="validate_zip").set_value(("evil.zip", out.getvalue(), "application/zip")).run()
    assert not at.exception and message in errors(at)
    assert not [b for b in at.button if b.key == "validate_run"]


def test_a_folder_leading_outside_the_data_root_is_refused(page, tmp_path):
    outside = tmp_path / "elsewhere"
    write_set(outside)
    (tmp_path / "root" / "shortcut").symlink_to(outside, target_is_directory=True)
    st.cache_data.clear()  # the folder list is cached for a minute
    at = choose_folder(page, "shortcut")
    assert not at.exception and "outside the data folder" in errors(at)
    assert not [b for b in at.button if b.key == "validate_run"]


def test_a_csv_without_labels_is_explained(page, tmp_path):
    folder = tmp_path / "root" / "nolabels"
    write_set(folder, ["x1", "x2"], label_col="comment")
    st.cache_data.clear()
    at = choose_folder(page, "nolabels")
    assert not at.exception and "No column holds labels the model knows" in errors(at)


def test_without_a_data_root_only_the_zip_is_offered(tiny_bundle, monkeypatch):
    monkeypatch.setenv("DERMO_MODEL_DIR", str(tiny_bundle))
    monkeypatch.delenv("DERMO_DATA_DIR", raising=False)
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.radio(key="validate_source").options == ["Upload a ZIP (images + one CSV)"]
