"""Colour histograms and the statistics file stored beside the model (round trip, bad files)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.data.datasets import load_ham10000
from core.eda import dataset_stats as ds
from core.eda import tables
from core.errors import InputError

CSV = """lesion_id,image_id,dx,dx_type,age,sex,localization
HAM_1,ISIC_1,mel,histo,55.0,male,back
HAM_1,ISIC_2,mel,histo,55.0,male,back
HAM_2,ISIC_3,nv,follow_up,,female,
HAM_3,ISIC_4,nv,consensus,70.0,female,face
"""


def solid(path: Path, rgb: tuple[int, int, int], size=(40, 30)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), rgb, dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture
def ham(tmp_path: Path) -> Path:
    root = tmp_path / "ham"
    (root / "images").mkdir(parents=True)
    (root / "HAM10000_metadata.csv").write_text(CSV)
    solid(root / "images" / "ISIC_1.png", (255, 0, 0))
    solid(root / "images" / "ISIC_2.png", (255, 0, 0), size=(400, 300))  # resolution must not matter
    solid(root / "images" / "ISIC_3.png", (0, 0, 255))
    (root / "images" / "ISIC_4.png").write_bytes(b"not an image")
    return root


def test_image_histograms_are_per_image_fractions(tmp_path):
    paths = [str(solid(tmp_path / "a.png", (255, 0, 128))), None, str(tmp_path / "missing.png")]
    calls = []
    hists, ok = ds.image_histograms(paths, bins=4, progress=lambda i, n: calls.append((i, n)))
    assert ok.tolist() == [True, False, False]
    assert hists[0].tolist() == [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]
    assert not hists[1:].any()
    assert calls[-1] == (3, 3)


def test_colour_indices_cap_is_seeded():
    assert ds.colour_indices(5, cap=10).tolist() == [0, 1, 2, 3, 4]
    sample = ds.colour_indices(100, cap=10, seed=3)
    assert len(set(sample)) == 10 and sample.tolist() == ds.colour_indices(100, cap=10, seed=3).tolist()


def test_write_and_read_stats_round_trip(ham, tmp_path):
    out = tmp_path / "bundle" / ds.STATS_FILE
    ds.write_stats(ham, out, None, "all")
    stats = ds.read_stats(out)
    frame, _ = load_ham10000(ham)
    # The stored cube reproduces every table of the original frame.
    pd.testing.assert_frame_equal(tables.class_table(stats.cube), tables.class_table(frame))
    pd.testing.assert_frame_equal(tables.age_table(stats.cube, "sex"), tables.age_table(frame, "sex"), check_dtype=False)
    assert stats.per_lesion.to_dict() == {1: 2, 2: 1}
    assert stats.colour["mel"][0] == 2 and stats.colour["nv"][0] == 1  # ISIC_4 is unreadable
    red = tables.colour_table(stats.colour).query("channel == 'red' and group == 'malignant'")
    assert red["fraction"].iloc[-1] == pytest.approx(1.0)
    assert stats.quality["unreadable_images"] == 1 and stats.quality["rows"] == 4
    assert stats.meta["rows_used"] == "all rows" and stats.meta["licence"] == "CC BY-NC 4.0"
    assert "ISIC_1" not in out.read_text()  # aggregates only, no row of the licensed CSV


def test_write_stats_of_the_training_split(ham, tmp_path):
    split = tmp_path / "split.csv"
    pd.DataFrame({"image_id": ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_4"],
                  "split": ["train", "train", "test", "train"]}).to_csv(split, index=False)
    doc = ds.write_stats(ham, tmp_path / "s.json", split, "train")
    assert doc["quality"]["rows"] == 3 and "'train' split" in doc["rows_used"]
    with pytest.raises(InputError, match="No split file"):
        ds.write_stats(ham, tmp_path / "t.json", tmp_path / "none.csv", "train")


@pytest.mark.parametrize("text,message", [
    ("{", "not a valid dataset statistics"),
    (json.dumps({"format": 99}), "format 99"),
    (json.dumps({"format": 1, "cube": {"columns": ["dx"], "data": []}}), "not a valid"),
])
def test_bad_stats_files(tmp_path, text, message):
    path = tmp_path / ds.STATS_FILE
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        ds.read_stats(path)
    with pytest.raises(InputError, match="No stored dataset statistics"):
        ds.read_stats(tmp_path / "absent.json")


def test_committed_default_statistics_load():
    from core.config import DEFAULT_MODEL, WEIGHTS_DIR

    stats = ds.read_stats(WEIGHTS_DIR / DEFAULT_MODEL / ds.STATS_FILE)
    assert stats.cube["n"].sum() == stats.quality["rows"] > 5000
    assert set(tables.class_table(stats.cube)["dx"]) == {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
