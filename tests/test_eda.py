"""core.eda.tables on a small synthetic frame: the numbers behind each chart, not just that a figure exists."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.eda import tables
from core.figures import eda as eda_figures

# 10 images, 7 lesions. Malignant: mel x3, bcc x1 -> 4; benign: nv x5, bkl x1 -> 6.
ROWS = [
    # image_id, group_id, dx, age, sex, site, dx_type, image_path
    ("I1", "L1", "mel", 62.0, "male", "back", "histo", "/x/I1.jpg"),
    ("I2", "L1", "mel", 62.0, "male", "back", "histo", "/x/I2.jpg"),
    ("I3", "L2", "mel", 47.0, "female", "face", "histo", "/x/I3.jpg"),
    ("I4", "L3", "bcc", 80.0, "male", "face", "histo", None),
    ("I5", "L4", "nv", 30.0, "female", "back", "follow_up", "/x/I5.jpg"),
    ("I6", "L4", "nv", 30.0, "female", "back", "follow_up", "/x/I6.jpg"),
    ("I7", "L4", "nv", 30.0, "female", "back", "follow_up", "/x/I7.jpg"),
    ("I8", "L5", "nv", 34.0, "male", "trunk", "histo", "/x/I8.jpg"),
    ("I9", "L6", "nv", np.nan, "unknown", "unknown", "consensus", "/x/I9.jpg"),
    ("I10", "L7", "bkl", 45.0, "female", "trunk", "consensus", "/x/I10.jpg"),
]


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["image_id", "group_id", "dx", "age", "sex", "site", "dx_type", "image_path"])


@pytest.fixture(params=["frame", "cube"])
def data(request, frame) -> pd.DataFrame:
    """Every table must give the same numbers from the raw frame and from its count cube."""
    return frame if request.param == "frame" else tables.to_cube(frame)


def test_cube_collapses_identical_rows_and_keeps_missing_age(frame):
    cube = tables.to_cube(frame)
    assert cube["n"].sum() == 10
    assert len(cube) == 7  # I1/I2 and I5/I6/I7 share a cell
    assert cube.loc[cube["dx"].eq("nv") & cube["age"].eq(30.0), "n"].item() == 3
    assert cube["age"].isna().sum() == 1


def test_class_table_counts_percentages_and_groups(data):
    table = tables.class_table(data).set_index("dx")
    assert list(table.index) == ["bcc", "bkl", "mel", "nv"]  # the model's class order
    assert table["count"].to_dict() == {"bcc": 1, "bkl": 1, "mel": 3, "nv": 5}
    assert table["percent"].to_dict() == pytest.approx({"bcc": 10.0, "bkl": 10.0, "mel": 30.0, "nv": 50.0})
    assert table["group"].to_dict() == {"bcc": "malignant", "bkl": "benign", "mel": "malignant", "nv": "benign"}
    assert table.loc["mel", "name"] == "Melanoma"


def test_sex_and_site_tables(data):
    sex = tables.sex_table(data).set_index("sex")
    assert sex["count"].to_dict() == {"female": 5, "male": 4, "unknown": 1}
    assert sex.loc["female", "percent"] == pytest.approx(50.0)
    site = tables.site_table(data)
    assert site["site"].iloc[0] == "back" and site["count"].iloc[0] == 5
    assert site.set_index("site")["percent"].to_dict() == pytest.approx(
        {"back": 50.0, "face": 20.0, "trunk": 20.0, "unknown": 10.0})


def test_malignancy_by_sex_percent_is_within_sex(data):
    table = tables.malignancy_by_sex_table(data).set_index(["sex", "group"])
    assert table.loc[("male", "malignant"), "count"] == 3  # I1, I2, I4
    assert table.loc[("male", "benign"), "count"] == 1
    assert table.loc[("male", "malignant"), "percent"] == pytest.approx(75.0)
    assert table.loc[("female", "malignant"), "percent"] == pytest.approx(20.0)


def test_site_sex_table_melanoma_and_malignant(data):
    mel = tables.site_sex_table(data, "melanoma")
    assert {(r.site, r.sex): r.count for r in mel.itertuples()} == {("back", "male"): 2, ("face", "female"): 1}
    assert mel["site"].iloc[0] == "back"  # most melanomas first
    malignant = tables.site_sex_table(data, "malignant")
    assert malignant["count"].sum() == 4


def test_age_bins(data):
    table = tables.age_table(data)
    assert table[["age_bin", "label", "count"]].values.tolist() == [
        [30, "30-34", 4], [45, "45-49", 2], [60, "60-64", 2], [80, "80-84", 1]]
    assert table["percent"].sum() == pytest.approx(100.0)  # of the 9 images with an age
    assert table.set_index("age_bin").loc[30, "percent"] == pytest.approx(400 / 9)


def test_age_by_group_percent_is_within_group(data):
    table = tables.age_table(data, by="group").set_index(["age_bin", "group"])
    assert table.loc[(30, "benign"), "count"] == 4
    assert table.loc[(30, "benign"), "percent"] == pytest.approx(80.0)  # 4 of 5 benign with an age
    assert table.loc[(60, "malignant"), "percent"] == pytest.approx(50.0)  # 2 of 4 malignant
    by_sex = tables.age_table(data, by="sex")
    assert by_sex.groupby("sex")["percent"].sum().to_dict() == pytest.approx({"female": 100.0, "male": 100.0})


def test_dx_type_table(data):
    table = tables.dx_type_table(data).set_index(["dx", "dx_type"])
    assert table.loc[("nv", "follow_up"), "count"] == 3
    assert table.loc[("nv", "follow_up"), ["name", "confirmed by"]].tolist() == ["Melanocytic nevus", "follow-up"]
    assert {t.name for t in eda_figures.fig_dx_type(tables.dx_type_table(data)).data} == {
        "histopathology", "follow-up", "expert consensus"}
    assert table.loc[("nv", "follow_up"), "percent"] == pytest.approx(60.0)
    assert table.loc[("mel", "histo"), "percent"] == pytest.approx(100.0)


def test_images_per_lesion_and_summary(frame):
    per_lesion = tables.images_per_lesion(frame)
    assert per_lesion.to_dict() == {1: 5, 2: 1, 3: 1}
    assert tables.lesion_summary(per_lesion) == {
        "lesions": 7, "images": 10, "multi_image_lesions": 2, "images_in_multi_image_lesions": 5}


def test_quality_summary(frame):
    summary = tables.quality_summary(frame, duplicates_dropped=2, unreadable=1)
    assert summary["rows"] == 10 and summary["lesions"] == 7
    assert summary["missing"] == {"age": 1, "sex": 1, "site": 1, "dx_type": 0, "image file": 1}
    assert summary["duplicate_rows"] == 2 and summary["unreadable_images"] == 1
    assert summary["images_per_lesion_max"] == 3
    assert summary["images_per_lesion_mean"] == pytest.approx(10 / 7)
    assert summary["imbalance_ratio"] == pytest.approx(5.0)  # nv 5 : bcc 1
    assert tables.missing_table(summary).set_index("column").loc["age", "percent"] == pytest.approx(10.0)


def test_filters(data):
    assert tables.class_table(tables.apply_filters(data, tables.Filters(sexes=("female",))))["count"].sum() == 5
    narrowed = tables.apply_filters(data, tables.Filters(age_range=(30.0, 45.0), sites=("back", "trunk")))
    assert tables.class_table(narrowed)["count"].sum() == 5  # I5-I7, I8, I10; I9 (no age) dropped
    assert tables.class_table(tables.apply_filters(data, tables.Filters(dxs=("mel",))))["count"].tolist() == [3]
    assert tables.class_table(tables.apply_filters(data, tables.Filters()))["count"].sum() == 10


def test_filter_options(frame):
    options = tables.filter_options(tables.to_cube(frame))
    assert options["sex"][0] == "female" and options["site"][0] == "back"
    assert options["dx"] == ["bcc", "bkl", "mel", "nv"]
    assert options["age"] == [30.0, 80.0]


def test_colour_sums_and_table():
    hists = np.zeros((4, 3, 4), dtype=np.float32)
    hists[0, :, 0] = 1  # benign (nv): all pixels dark
    hists[1, :, 3] = 1  # benign (nv): all bright
    hists[2, :, 3] = 1  # malignant (mel): bright
    ok = np.array([True, True, True, False])  # the 4th did not decode
    sums = tables.colour_sums(hists, ok, pd.Series(["nv", "nv", "mel", "mel"]))
    assert sums["nv"][0] == 2 and sums["mel"][0] == 1
    table = tables.colour_table(sums)
    red = table[table["channel"] == "red"].set_index(["group", "intensity"])["fraction"]
    assert red[("benign", 32.0)] == pytest.approx(0.5) and red[("benign", 224.0)] == pytest.approx(0.5)
    assert red[("malignant", 224.0)] == pytest.approx(1.0)
    assert set(tables.colour_table(sums, dxs=("mel",))["group"]) == {"malignant"}


def test_gallery_rows_only_with_images_and_seeded(frame):
    rows = tables.gallery_rows(frame, per_class=2, seed=1)
    assert rows["image_path"].notna().all()
    assert rows.groupby("dx").size().to_dict() == {"bkl": 1, "mel": 2, "nv": 2}  # bcc has no image file
    assert rows["image_id"].tolist() == tables.gallery_rows(frame, per_class=2, seed=1)["image_id"].tolist()


def test_figures_carry_the_table_numbers(frame):
    cube = tables.to_cube(frame)
    fig = eda_figures.fig_classes(tables.class_table(cube))
    counts = {y: x for trace in fig.data for y, x in zip(trace.y, trace.x)}
    assert counts == {"Basal cell carcinoma": 1, "Benign keratosis-like lesion": 1, "Melanoma": 3, "Melanocytic nevus": 5}
    assert {trace.name for trace in fig.data} == {"benign", "malignant"}
    assert "3 (30.0%)" in [t for trace in fig.data for t in trace.text]
    sites = eda_figures.fig_sites(tables.site_table(cube))
    assert dict(zip(sites.data[0].y, sites.data[0].x))["back"] == pytest.approx(50.0)
    for fig in (eda_figures.fig_sex(tables.sex_table(cube)), eda_figures.fig_age(tables.age_table(cube, "group"), "group", True),
                eda_figures.fig_dx_type(tables.dx_type_table(cube)), eda_figures.fig_lesions(tables.images_per_lesion(frame)),
                eda_figures.fig_site_sex(tables.site_sex_table(cube)), eda_figures.fig_malignancy_by_sex(tables.malignancy_by_sex_table(cube))):
        assert fig.layout.title.text and len(fig.data) >= 1
