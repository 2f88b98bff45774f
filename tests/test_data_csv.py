"""Metadata CSVs of either dataset, told apart by their columns; foreign and broken CSVs refused clearly."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.data.datasets import find_datasets, load_metadata_csv, read_rgb
from core.errors import InputError

HAM = "lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_1,mel,histo,55,male,back\n"
ISIC = ("image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
        "ISIC_1,IP_1,male,45,torso,melanoma,malignant,1\nISIC_2,IP_1,,,,unknown,benign,0\n")


def test_layouts_are_detected_from_bytes():
    frame, report, layout = load_metadata_csv(HAM.encode(), "ham.csv")
    assert layout == "ham10000" and frame["dx"].tolist() == ["mel"] and frame["image_path"].isna().all()
    frame, report, layout = load_metadata_csv(ISIC.encode(), "train.csv")
    assert layout == "isic2020" and frame["dx"].tolist() == ["mel", "other"]
    assert frame["sex"].tolist() == ["male", "unknown"] and report.age_imputed == 1


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    (HAM.splitlines()[0] + "\n", "header but no data rows"),
    ("a,b\n1,2\n", "match no dataset.*found: a, b"),
    ("image,MEL,NV,BCC,AK\nISIC_1,1,0,0,0\n", "ISIC 2019 ground truth"),
    ("image_name,patient_id,sex,age_approx,anatom_site_general_challenge\nI,P,male,40,torso\n", "ISIC 2020 test.csv"),
    ("lesion_id,image_id,dx,age,sex\nH,I,mel,40,male\n", "HAM10000 metadata.*missing the column\\(s\\) dx_type, localization"),
    (HAM.replace(",55,", ",fifty-five,"), "column 'age' must hold numbers.*'fifty-five'"),
    (ISIC.replace(",1\n", ",yes\n"), "'target' must hold only 0 and 1"),
    (HAM.replace(",mel,", ",cancer,"), "Unknown diagnosis"),
])
def test_bad_csvs_name_what_is_wrong(text, message):
    with pytest.raises(InputError, match=message):
        load_metadata_csv(text.encode(), "upload.csv")


def test_binary_garbage_is_refused():
    with pytest.raises(InputError, match="not a readable CSV"):
        load_metadata_csv(b"\xff\xfe\x00\x81garbage\x00", "x.csv")


def test_find_datasets(tmp_path):
    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "HAM10000_metadata.csv").write_text(HAM)
    (tmp_path / "isic").mkdir()
    (tmp_path / "isic" / "train.csv").write_text(ISIC)
    (tmp_path / "isic" / "notes.csv").write_text("a,b\n1,2\n")
    found = find_datasets(tmp_path)
    assert found == {"HAM10000 (ham)": tmp_path / "ham", "ISIC 2020 (isic/train.csv)": tmp_path / "isic" / "train.csv"}
    assert find_datasets(tmp_path / "absent") == {}


def test_read_rgb_reduced_decoding(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((600, 800, 3), 200, dtype=np.uint8)).save(path)
    assert read_rgb(path).shape == (600, 800, 3)
    small = read_rgb(path, max_side=256)
    assert max(small.shape[:2]) <= 512 and small.shape[2] == 3
