"""AppTest of app_pages/2_Dataset_Explorer.py: shared HAM10000, ISIC 2020, no data, broken CSVs, uploads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from figure_checks import assert_toolbar_room, chart_specs
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import config
from core.eda import tables
from core.eda.dataset_stats import STATS_FILE
from ui.explorer import DATA_ENV
from ui.loaders import MODEL_ENV

PAGE = str(Path(__file__).resolve().parent.parent / "app_pages" / "2_Dataset_Explorer.py")
TIMEOUT = 180  # the first HAM10000 run computes colour statistics of 10,015 images


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv(MODEL_ENV, raising=False)
    st.cache_data.clear()  # the card and datasets are cached per path; the colour store may stay


def run() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    return at


def spec(at: AppTest, i: int) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def section(at: AppTest, name: str) -> AppTest:
    at.radio(key="explorer_section").set_value(name).run()
    assert_clean(at)
    return at


def test_ham10000_charts_and_filters(monkeypatch, ham_dir):
    monkeypatch.setenv(DATA_ENV, str(ham_dir.parent))
    at = run()
    assert_clean(at)
    assert not at.error
    assert at.selectbox(key="explorer_dataset").value.startswith("HAM10000")
    assert len(at.get("plotly_chart")) == 11  # ten charts; chart 10 has two panels
    captions = " ".join(c.value for c in at.caption)
    for key in ("classes", "sex", "sites", "age", "colour", "dx_type"):
        assert tables.CAPTIONS[key][:40] in captions, key
    assert "10,015 images pass the filters" in captions
    classes = spec(at, 0)
    counts = {y: x for trace in classes["data"] for y, x in zip(trace["y"], _decode(trace["x"]))}
    assert counts["Melanocytic nevus"] == 6705 and counts["Melanoma"] == 1113
    assert "1,956 of 7,470 lesions have more than one image" in captions
    confirmed = {trace["name"] for trace in titled(at, "Diagnosis confirmation type by class")["data"]}
    assert confirmed == {"histopathology", "follow-up", "expert consensus", "confocal microscopy"}
    assert_toolbar_room(at)

    at.multiselect(key="explorer_sex").set_value(["female"]).run()
    assert_clean(at)
    assert "4,552 images pass the filters" in " ".join(c.value for c in at.caption)
    at.slider(key="explorer_age").set_value((40.0, 60.0)).run()
    at.multiselect(key="explorer_dx").set_value(["mel"]).run()
    assert_clean(at)
    frame = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    expected = ((frame.sex == "female") & frame.age.between(40, 60) & (frame.dx == "mel")).sum()
    assert f"{expected:,} images pass the filters" in " ".join(c.value for c in at.caption)


def titled(at: AppTest, title: str) -> dict:
    return next(s for s in chart_specs(at) if s["layout"].get("title", {}).get("text") == title)


def _decode(values) -> list:
    """plotly JSON stores numeric arrays as base64 typed arrays."""
    import base64

    if isinstance(values, list):
        return values
    return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).tolist()


def test_ham10000_quality_gallery_and_transformations(monkeypatch, ham_dir, tiny_bundle):
    monkeypatch.setenv(DATA_ENV, str(ham_dir.parent))
    monkeypatch.setenv(MODEL_ENV, str(tiny_bundle))
    at = section(run(), "Data quality")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows (images)"] == "10,015" and metrics["Lesions"] == "7,470"
    assert metrics["Unreadable images"] == "0" and metrics["Class imbalance (largest / smallest)"] == "58.3 : 1"
    at = section(at, "Image gallery")
    assert len(at.get("image")) == 21  # three per class
    at = section(at, "Transformations")
    assert not at.error
    captions = " ".join(c.value for c in at.caption)
    assert "train_transform at 128x128 (size from the default model's card)" in captions


def test_isic2020_csv(monkeypatch, ham_dir):
    monkeypatch.setenv(DATA_ENV, str(ham_dir.parent))
    at = run()
    isic = [o for o in at.selectbox(key="explorer_dataset").options if o.startswith("ISIC 2020")]
    at.selectbox(key="explorer_dataset").set_value(isic[0]).run()
    assert_clean(at)
    assert not at.error
    assert len(at.get("plotly_chart")) == 10  # no colour chart without images
    assert any("ISIC 2020 train.csv comes without images" in i.value for i in at.info)
    assert "33,126 images pass the filters" in " ".join(c.value for c in at.caption)
    at = section(at, "Data quality")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Patients"] == "2,056" and metrics["Unreadable images"] == "not checked"
    at = section(at, "Image gallery")
    assert not at.get("image") and any("metadata only" in i.value for i in at.info)


def test_no_data_shows_the_committed_statistics():
    at = run()
    assert_clean(at)
    assert at.radio(key="explorer_source").value == "Statistics stored with the model"
    assert any("statistics stored with the default model" in i.value and DATA_ENV in i.value for i in at.info)
    assert len(at.get("plotly_chart")) == 11
    at.multiselect(key="explorer_dx").set_value(["mel"]).run()
    assert_clean(at)
    at = section(at, "Transformations")
    assert any("metadata only" in i.value for i in at.info)


def _synthetic_stats(folder: Path) -> Path:
    from core.eda.dataset_stats import build_stats

    frame = pd.DataFrame({
        "image_id": ["a", "b", "c"], "group_id": ["L1", "L1", "L2"], "dx": ["mel", "mel", "nv"],
        "age": [50.0, 50.0, np.nan], "sex": ["male", "male", "female"], "site": ["back", "back", "face"],
        "dx_type": ["histo", "histo", "follow_up"], "image_path": [None, None, None],
    })
    folder.mkdir(parents=True, exist_ok=True)
    doc = build_stats(frame, 0, {"source": "synthetic", "layout": "ham10000", "rows_used": "all rows"})
    (folder / STATS_FILE).write_text(json.dumps(doc))
    return folder


def test_no_data_with_synthetic_statistics(monkeypatch, tmp_path):
    monkeypatch.setenv(MODEL_ENV, str(_synthetic_stats(tmp_path / "bundle")))
    at = run()
    assert_clean(at)
    classes = spec(at, 0)
    counts = {y: x for trace in classes["data"] for y, x in zip(trace["y"], _decode(trace["x"]))}
    assert counts == {"Melanoma": 2, "Melanocytic nevus": 1}
    assert {trace["name"] for trace in titled(at, "Diagnosis confirmation type by class")["data"]} == {"histopathology", "follow-up"}
    assert_toolbar_room(at)
    assert "3 images pass the filters" in " ".join(c.value for c in at.caption)


def test_no_data_and_no_statistics(monkeypatch, tmp_path):
    monkeypatch.setenv(MODEL_ENV, str(tmp_path))
    at = run()
    assert_clean(at)
    assert any("No stored dataset statistics" in e.value for e in at.error)
    assert any("python -m core.data.download" in i.value for i in at.info)


@pytest.mark.parametrize("text,message", [
    ("lesion_id,image_id,dx,age,sex\nH,I,mel,40,male\n", "missing the column(s) dx_type, localization"),
    ("", "it is empty"),
    ("image,MEL,NV,BCC\nISIC_1,1,0,0\n", "ISIC 2019 ground truth"),
    ("lesion_id,image_id,dx,dx_type,age,sex,localization\nH,I,mel,histo,old,male,back\n", "must hold numbers"),
])
def test_broken_csv_by_path(monkeypatch, tmp_path, text, message):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    path = tmp_path / "broken.csv"
    path.write_text(text)
    at = run()
    at.radio(key="explorer_source").set_value("Type a path").run()
    at.text_input(key="explorer_path").input(str(path)).run()
    assert_clean(at)
    assert len(at.error) == 1 and message in at.error[0].value
    assert not at.get("plotly_chart")


def test_uploaded_csv_is_metadata_only(tmp_path):
    csv = ("lesion_id,image_id,dx,dx_type,age,sex,localization\nH1,I1,mel,histo,40,male,back\n"
           "H2,I2,nv,follow_up,35,female,face\n")
    at = run()
    at.radio(key="explorer_source").set_value("Upload a metadata CSV").run()
    assert any("Choose the data" in i.value for i in at.info)
    at.file_uploader(key="explorer_upload").set_value(("meta.csv", csv.encode(), "text/csv")).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 10
    assert any("no image files found" in i.value for i in at.info)
    at.file_uploader(key="explorer_upload").set_value(("bad.csv", b"a,b\n1,2\n", "text/csv")).run()
    assert_clean(at)
    assert any("match no dataset" in e.value for e in at.error)


def test_env_folder_without_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    at = run()
    assert_clean(at)
    assert at.radio(key="explorer_source").value == "Statistics stored with the model"
    at.radio(key="explorer_source").set_value(f"Folder in {DATA_ENV}").run()
    assert any("holds no HAM10000 folder" in e.value for e in at.error)


def _small_ham(root: Path) -> Path:
    """A seven-image HAM10000 folder, one image per class, I0.jpg unreadable."""
    (root / "images").mkdir(parents=True)
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i, dx in enumerate(config.CLASSES):
        rows.append(f"L{i},I{i},{dx},histo,{30 + 5 * i},{'male' if i % 2 else 'female'},back")
        Image.fromarray(np.full((30, 40, 3), 20 * i, dtype=np.uint8)).save(root / "images" / f"I{i}.jpg")
    (root / "images" / "I0.jpg").write_bytes(b"broken")
    (root / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    return root


def test_small_ham_folder_counts_unreadable_images(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    root = _small_ham(tmp_path / "ham")
    at = run()
    at.radio(key="explorer_source").set_value("Type a path").run()
    at.text_input(key="explorer_path").input(str(root)).run()
    assert_clean(at)
    assert len(at.get("plotly_chart")) == 11
    at = section(at, "Data quality")
    assert {m.label: m.value for m in at.metric}["Unreadable images"] == "1"


def test_without_a_data_folder_no_path_can_be_typed():
    at = run()
    assert_clean(at)
    assert "Type a path" not in at.radio(key="explorer_source").options


def test_typed_paths_leading_outside_the_data_folder_are_refused(monkeypatch, tmp_path):
    root, outside = tmp_path / "root", _small_ham(tmp_path / "elsewhere")
    (root / "inside").mkdir(parents=True)
    (root / "shortcut").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv(DATA_ENV, str(root))
    at = run()
    at.radio(key="explorer_source").set_value("Type a path").run()
    for typed, how in (("../elsewhere", ""), ("inside/../..", ""), (str(outside), ""), ("/etc", ""),
                       ("shortcut", "through a symbolic link"), ("shortcut/HAM10000_metadata.csv", "symbolic link")):
        at.text_input(key="explorer_path").input(typed).run()
        assert_clean(at)
        assert len(at.error) == 1 and "leads outside the data folder" in at.error[0].value and how in at.error[0].value
        assert not at.get("plotly_chart") and not at.get("image")
