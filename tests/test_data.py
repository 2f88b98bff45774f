from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.config import CLASSES
from core.data.datasets import (
    LesionDataset,
    assert_grouped,
    load_ham10000,
    load_images,
    load_isic2020,
    load_or_create_split,
    make_split,
)
from core.data.metadata import MetadataEncoder
from core.data.transforms import eval_transform
from core.errors import InputError

ROWS = """lesion_id,image_id,dx,dx_type,age,sex,localization
HAM_1,ISIC_1,mel,histo,55.0,male,back
HAM_1,ISIC_2,mel,histo,55.0,male,back
HAM_2,ISIC_3,nv,follow_up,,female,
HAM_3,ISIC_4,bkl,consensus,70.0,unknown,face
HAM_4,ISIC_5,nv,histo,30.0,male,unknown
HAM_4,ISIC_5,nv,histo,30.0,male,unknown
"""


def write_ham(root: Path, folders=("images",), corrupt: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "HAM10000_metadata.csv").write_text(ROWS)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        folder = root / folders[i % len(folders)]
        folder.mkdir(exist_ok=True)
        path = folder / f"ISIC_{i}.jpg"
        if f"ISIC_{i}" == corrupt:
            path.write_bytes(b"not a jpeg")
        else:
            Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return root


def test_cleaning_report_and_standard_frame(tmp_path):
    frame, report = load_ham10000(write_ham(tmp_path / "ham"))
    assert report.rows_in == 6 and report.duplicates_dropped == 1 and len(frame) == 5
    assert report.age_imputed == 1 and report.site_unknown == 2 and report.sex_unknown == 1
    assert frame.loc[frame.image_id == "ISIC_3", "site"].item() == "unknown"
    assert frame.loc[frame.image_id == "ISIC_3", "age_missing"].item()
    assert frame["label"].tolist() == [CLASSES.index(d) for d in frame["dx"]]
    assert frame["image_path"].notna().all()


def test_dataverse_layout_with_two_image_folders(tmp_path):
    root = write_ham(tmp_path / "ham", folders=("HAM10000_images_part_1", "HAM10000_images_part_2"))
    frame, _ = load_ham10000(root)
    assert frame["image_path"].notna().all()
    assert {Path(p).parent.name for p in frame["image_path"]} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}


def test_unreadable_images_are_dropped_and_listed(tmp_path):
    frame, report = load_ham10000(write_ham(tmp_path / "ham", corrupt="ISIC_3"))
    kept, images = load_images(frame, report)
    assert report.unreadable_images == ["ISIC_3"]
    assert len(kept) == len(images) == 4 and "ISIC_3" not in set(kept["image_id"])


@pytest.mark.parametrize(
    "text,message",
    [("lesion_id,image_id\nA,B\n", "missing the column"), ("", "not a readable CSV"),
     ("lesion_id,image_id,dx,dx_type,age,sex,localization\nH,I,cancer,histo,1,male,back\n", "Unknown diagnosis")],
)
def test_bad_csvs_get_clear_messages(tmp_path, text, message):
    (tmp_path / "HAM10000_metadata.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        load_ham10000(tmp_path)


def test_wrong_path():
    with pytest.raises(InputError, match="No such folder"):
        load_ham10000("/nonexistent/ham")


def test_real_split_has_no_lesion_in_two_splits(ham_dir, tmp_path):
    frame, _ = load_ham10000(ham_dir)
    assert len(frame) == 10015 and frame["group_id"].nunique() == 7470
    split = load_or_create_split(frame, tmp_path / "split.csv", seed=42, create=True)
    assert_grouped(frame, split)  # raises on leakage
    lesions = {s: set(frame.loc[split == s, "group_id"]) for s in ("train", "val", "test")}
    assert not (lesions["train"] & lesions["val"] or lesions["train"] & lesions["test"] or lesions["val"] & lesions["test"])
    fractions = split.value_counts(normalize=True)
    assert 0.12 < fractions["test"] < 0.18 and 0.12 < fractions["val"] < 0.18
    for dx in CLASSES:  # stratified: every class in every split
        assert set(split[frame["dx"] == dx]) == {"train", "val", "test"}
    # written once, read back identically
    again = load_or_create_split(frame, tmp_path / "split.csv", seed=0)
    assert (again.to_numpy() == split.to_numpy()).all()


def test_committed_split_matches_the_data(ham_dir):
    from core.config import SPLITS_DIR

    frame, _ = load_ham10000(ham_dir)
    split = load_or_create_split(frame, SPLITS_DIR / "ham10000.csv", seed=42)
    assert_grouped(frame, split)


def test_leak_is_detected():
    frame = pd.DataFrame({"group_id": ["a", "a", "b"], "dx": ["nv", "nv", "mel"]})
    with pytest.raises(InputError, match="more than one split"):
        assert_grouped(frame, pd.Series(["train", "test", "val"]))


def test_make_split_is_deterministic():
    frame = pd.DataFrame({"group_id": [f"g{i // 2}" for i in range(200)], "dx": ["nv", "mel"] * 100})
    assert (make_split(frame, 1) == make_split(frame, 1)).all()


def test_isic2020_loader(tmp_path):
    csv = Path("../shared/data/isic2020/train.csv")
    if not csv.is_file():
        csv = tmp_path / "train.csv"
        csv.write_text(
            "image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target\n"
            "ISIC_1,IP_1,male,45,torso,nevus,benign,0\nISIC_2,IP_1,,,,melanoma,malignant,1\n"
        )
    frame, report = load_isic2020(csv)
    assert set(frame["dx"]) == {"mel", "other"}
    assert frame["melanoma"].sum() == (frame["dx"] == "mel").sum()
    enc = MetadataEncoder()
    assert enc.encode_many(frame["age"].head(50), frame["sex"].head(50), frame["site"].head(50)).shape[0] == min(50, len(frame))
    with pytest.raises(InputError, match="missing the column"):
        load_isic2020(write_ham(tmp_path / "ham") / "HAM10000_metadata.csv")


def test_dataset_withholds_metadata(tmp_path):
    frame, report = load_ham10000(write_ham(tmp_path / "ham"))
    frame, images = load_images(frame, report)
    enc = MetadataEncoder.fit(frame["age"])
    tf = eval_transform((24, 32), (0.5,) * 3, (0.5,) * 3)
    image, meta, label = LesionDataset(frame, images, enc, tf)[0]
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32 and meta.shape == (enc.dim,)
    withheld = LesionDataset(frame, images, enc, tf, meta_dropout=1.0)
    assert all(torch.equal(withheld[i][1], torch.from_numpy(enc.unknown())) for i in range(len(withheld)))


def test_only_training_may_write_a_split(tmp_path):
    frame, _ = load_ham10000(write_ham(tmp_path / "ham"))
    with pytest.raises(InputError, match="does not exist"):
        load_or_create_split(frame, tmp_path / "missing.csv", seed=0)
    assert not (tmp_path / "missing.csv").exists()  # creating one is tested on the real data above


def test_a_card_refuses_another_split_file(tmp_path):
    from core.data.datasets import prepare_for_card, split_sha256

    ham = write_ham(tmp_path / "ham")
    frame, _ = load_ham10000(ham)
    splits = ["train"] * (len(frame) - 2) + ["val", "test"]
    pd.DataFrame({"image_id": frame["image_id"], "split": splits}).to_csv(tmp_path / "split.csv", index=False)
    card = {"training": {"seed": 0}, "data": {"split_sha256": split_sha256(tmp_path / "split.csv")}}
    assert len(prepare_for_card(card, ham, tmp_path / "split.csv")[0]) >= 1
    other = tmp_path / "other.csv"
    other.write_text((tmp_path / "split.csv").read_text().replace("train", "test", 1))
    with pytest.raises(InputError, match="not the one this model was trained with"):
        prepare_for_card(card, ham, other)
