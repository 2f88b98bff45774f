"""core.validation.validate: a clinic's own labelled set scored beside the card; its inputs, safety and command."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.config import REPO_ROOT, SPLITS_DIR
from core.errors import InputError
from core.inference import Predictor
from core.data.root import resolve_under
from core.model.bundle import read_card
from core.model.evaluate import compute_metrics
from core.validation import validate
from core.validation.inputs import (
    Columns,
    build_set,
    detect_columns,
    index_images,
    list_folders,
    load_set,
    open_zip,
    read_labels,
)
from core.validation.label_maps import LabelMap, ValueMap, load_user_map, normalise
from core.validation.report import comparison_rows, pdf_summary, problems_lines, text_table
from tests.conftest import tiny_card
from tests.test_quality import lesion_like, make_dicom

torch.set_num_threads(1)
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
PH2 = {"mel": "Melanoma", "nv": "Common Nevus"}


def _card() -> dict:
    from core.data.metadata import MetadataEncoder

    return tiny_card(MetadataEncoder())


def write_images(folder: Path, names: list[str], seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(lesion_like(rng)).save(folder / name)


def synthetic_set(tmp_path: Path, labels: list[str], extra: dict[str, list] | None = None,
                  names: list[str] | None = None) -> tuple[Path, Path]:
    """A folder of lesion-like PNGs and a CSV naming them without extension."""
    folder = tmp_path / "set"
    names = names or [f"case{i:03d}.png" for i in range(len(labels))]
    write_images(folder, names)
    frame = pd.DataFrame({"Image": [Path(n).stem for n in names], "Diagnosis": labels, **(extra or {})})
    csv = tmp_path / "labels.csv"
    frame.to_csv(csv, index=False)
    return folder, csv


# -- label and site maps -----------------------------------------------------------------------
def test_builtin_names_cover_ph2_isic_and_pathology_words():
    lmap = LabelMap.build(CLASSES)
    expected = {"Melanoma": "mel", "Common Nevus": "nv", "Atypical_Nevus": "nv", "seborrhoeic keratosis": "bkl",
                "Basal cell carcinoma": "bcc", "AK": "akiec", "MEL": "mel", "Bowen's disease": "akiec",
                "Dermatofibroma": "df", "angioma": "vasc", "solar-lentigo": "bkl", "nv": "nv"}
    assert {label: lmap.code(label) for label in expected} == expected
    for label in ("SCC", "squamous cell carcinoma", "unknown", "other", "", None):
        assert lmap.code(label) is None, label
    assert normalise("  Atypical_Nevus ") == "atypical nevus"


def test_card_class_names_map_and_a_user_map_wins():
    lmap = LabelMap.build(CLASSES, {"nv": "Melanocytic nevus"}, {"Klasse A": "mel", "Melanoma": None})
    assert lmap.code("melanocytic NEVUS") == "nv" and lmap.code("klasse a") == "mel"
    assert lmap.code("Melanoma") is None  # the user left it out on purpose
    codes, unmapped = lmap.apply(pd.Series(["Klasse A", "SCC", "SCC", "Melanoma", None]))
    assert codes[0] == "mel" and codes[1:].isna().all()
    assert unmapped == {"SCC": 2, "Melanoma": 1, "(empty)": 1}


def test_user_maps_from_csv_with_header_and_json(tmp_path):
    csv = tmp_path / "map.csv"
    csv.write_text("label,code\nKlasse A,mel\nKlasse B;nv\nIgnore me,\n")
    assert load_user_map(csv, CLASSES, "label") == {"Klasse A": "mel", "Klasse B": "nv", "Ignore me": None}
    assert load_user_map(b'{"x": "bcc", "y": null}', CLASSES, "label") == {"x": "bcc", "y": None}
    with pytest.raises(InputError, match="names melanoma, which the model does not know"):
        load_user_map(b"a,melanoma\n", CLASSES, "label")
    with pytest.raises(InputError, match="not valid JSON"):
        load_user_map(b'{"a": ', CLASSES, "label", "m.json")
    with pytest.raises(InputError, match="two columns"):
        load_user_map(b"just one column\n", CLASSES, "label")
    with pytest.raises(InputError, match="No such map file"):
        load_user_map(tmp_path / "missing.csv", CLASSES, "label")


def test_sites_and_sex_in_other_vocabularies():
    from core.data.metadata import MetadataEncoder

    enc = MetadataEncoder()
    sites, unmapped = ValueMap.sites(enc.accepted_sites, {"Rücken": "back"}).apply(
        pd.Series(["anterior torso", "posterior torso", "Head/Neck", "LOWER_EXTREMITY", "palms/soles", "Rücken",
                   "armpit", None]))
    assert list(sites) == ["torso", "back", "head/neck", "lower extremity", "palms/soles", "back", "unknown", "unknown"]
    assert unmapped == {"armpit": 1}
    sexes, unmapped = ValueMap.sexes(enc.sexes).apply(pd.Series(["F", "male", "w", "x", ""]))
    assert list(sexes) == ["female", "male", "female", "unknown", "unknown"] and unmapped == {"x": 1}


# -- columns and matching ----------------------------------------------------------------------
def test_columns_are_detected_from_values_and_names(tmp_path):
    folder, _ = synthetic_set(tmp_path, ["mel", "nv", "nv"])
    index = index_images(folder)
    frame = pd.DataFrame({"row": ["1", "2", "3"], "Lesion Name": ["case000", "case001.png", "CASE002"],
                          "Clinical Diagnosis": ["Melanoma", "Common Nevus", "Atypical Nevus"],
                          "age_approx": ["40", "55", ""], "Gender": ["f", "m", "f"],
                          "anatom_site_general_challenge": ["torso", "", "head/neck"], "patient_id": ["p1", "p1", "p2"]})
    cols = detect_columns(frame, index, LabelMap.build(CLASSES))
    assert (cols.id, cols.label, cols.age, cols.sex, cols.site, cols.group) == (
        "Lesion Name", "Clinical Diagnosis", "age_approx", "Gender", "anatom_site_general_challenge", "patient_id")
    given = detect_columns(frame, index, LabelMap.build(CLASSES), {"site": "", "group": "ROW"})
    assert given.site is None and given.group == "row"
    with pytest.raises(InputError, match="no column 'dx'.*Its columns are: row, Lesion Name"):
        detect_columns(frame, index, LabelMap.build(CLASSES), {"label": "dx"})


def test_ph2_layout_nested_bmp_folders_with_masks(tmp_path):
    """PH2: IMD002/IMD002_Dermoscopic_Image/IMD002.bmp beside IMD002/IMD002_lesion/IMD002_lesion.bmp."""
    for case in ("IMD002", "IMD003"):
        write_images(tmp_path / "PH2" / case / f"{case}_Dermoscopic_Image", [f"{case}.bmp"])
        write_images(tmp_path / "PH2" / case / f"{case}_lesion", [f"{case}_lesion.bmp"])
    (tmp_path / "ph2.csv").write_text("Image Name,Clinical Diagnosis\nIMD002,Atypical Nevus\nIMD003,Melanoma\n")
    vset = load_set(tmp_path / "PH2", tmp_path / "ph2.csv", _card())
    assert list(vset.rows["relative"]) == ["IMD002/IMD002_Dermoscopic_Image/IMD002.bmp",
                                           "IMD003/IMD003_Dermoscopic_Image/IMD003.bmp"]
    assert list(vset.rows["code"]) == ["nv", "mel"] and vset.problems["images_without_row"]["count"] == 2


def test_no_id_column_and_no_label_column_are_explained(tmp_path):
    folder, _ = synthetic_set(tmp_path, ["mel", "nv"])
    index = index_images(folder)
    with pytest.raises(InputError, match="No column of the CSV names the images"):
        detect_columns(pd.DataFrame({"image_id": ["x1", "x2"], "dx": ["mel", "nv"]}), index, LabelMap.build(CLASSES))
    with pytest.raises(InputError, match="No column holds labels the model knows: e.g. 'diagnosis' holds 'Klasse A'"):
        detect_columns(pd.DataFrame({"image_id": ["case000", "case001"], "diagnosis": ["Klasse A", "Klasse B"]}),
                       index, LabelMap.build(CLASSES))


def test_what_is_left_out_is_listed_with_counts(tmp_path):
    names = [f"case{i:03d}.png" for i in range(6)]
    folder, _ = synthetic_set(tmp_path, ["mel"] * 6, names=names)
    frame = pd.DataFrame({
        "image_id": ["case000", "case001", "case001", "case002.png", "missing1", "missing2", "case003", ""],
        "dx": ["Melanoma", "nevus", "nevus", "SCC", "nv", "nv", "bcc", "nv"],
        "age": ["40", "abc", "abc", "200", "1", "1", "", "1"],
        "localization": ["back", "armpit", "armpit", "face", "", "", "", ""],
    })
    index = index_images(folder)
    lmap = LabelMap.build(CLASSES)
    vset = build_set(frame, index, _card(), lmap, detect_columns(frame, index, lmap))
    assert list(vset.rows["id"]) == ["case000", "case001", "case003"]
    p = vset.problems
    assert p["unmapped_labels"] == {"count": 1, "labels": {"SCC": 1}}
    assert p["ids_without_image"] == {"count": 2, "items": ["missing1", "missing2"]}
    assert p["images_without_row"]["count"] == 2 and "case004.png" in p["images_without_row"]["items"]
    assert p["duplicate_rows"]["items"] == ["case001"] and p["empty_ids"] == 1
    assert p["ages_unreadable"]["items"] == ["abc"] and np.isnan(vset.rows["age"][1])
    assert p["sites_unknown"] == {"count": 1, "values": {"armpit": 1}}
    lines = "\n".join(problems_lines(p))
    assert "2 id(s) with no image: missing1, missing2" in lines and "'SCC' x1" in lines


def test_conflicting_duplicates_and_nothing_usable_are_refused(tmp_path):
    folder, _ = synthetic_set(tmp_path, ["mel", "nv"])
    index, lmap = index_images(folder), LabelMap.build(CLASSES)
    frame = pd.DataFrame({"image_id": ["case000", "case000.png"], "dx": ["mel", "nv"]})
    with pytest.raises(InputError, match="different labels.*case000.png"):
        build_set(frame, index, _card(), lmap, Columns("image_id", "dx"))
    frame = pd.DataFrame({"image_id": ["case000", "case001"], "dx": ["SCC", "Klasse B"]})
    with pytest.raises(InputError, match="No image can be scored: 2 row\\(s\\) have labels that map to no class"):
        build_set(frame, index, _card(), lmap, Columns("image_id", "dx"))


def test_empty_and_unreadable_csvs(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("image_id,dx\n")
    with pytest.raises(InputError, match="is empty"):
        read_labels(tmp_path / "empty.csv")
    with pytest.raises(InputError, match="no rows: the set is empty"):
        read_labels(tmp_path / "header.csv")
    with pytest.raises(InputError, match="No such label CSV"):
        read_labels(tmp_path / "nope.csv")
    assert list(read_labels(b"image_id;dx\n007;mel\n").iloc[0]) == ["007", "mel"]  # ; separated, leading zeros kept


def test_empty_image_folder_is_refused(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "labels.csv").write_text("image_id,dx\na,mel\n")
    with pytest.raises(InputError, match="holds no image files"):
        load_set(tmp_path / "set", tmp_path / "labels.csv", _card())


# -- the data root and ZIPs --------------------------------------------------------------------
def test_nothing_outside_the_data_root_is_read(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_images(root / "clinic", ["a.png"])
    write_images(outside, ["secret.png"])
    (outside / "labels.csv").write_text("image_id,dx\nsecret,mel\n")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "clinic" / "leak.png").symlink_to(outside / "secret.png")
    assert resolve_under(root, "clinic") == (root / "clinic").resolve()
    assert resolve_under(root, ".") == root.resolve()
    for bad in ("..", "../outside", "clinic/../../outside", "link", "link/labels.csv", str(outside), "/etc"):
        with pytest.raises(InputError, match="outside the data folder"):
            resolve_under(root, bad)
    with pytest.raises(InputError, match="outside the data folder"):
        load_set("link", "link/labels.csv", _card(), root=root)
    index = index_images(root / "clinic", root)
    assert [p.name for p in index.files] == ["a.png"] and index.outside_root == ["leak.png"]
    assert "link" in list_folders(root) and not any(f.startswith("link/") for f in list_folders(root))


def _zip(members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return out.getvalue()


@pytest.mark.parametrize("members, symlinks, message", [
    ({"../evil.csv": b"x"}, (), "escapes its folder"),
    ({"set/../../evil.csv": b"x"}, (), "escapes its folder"),
    ({"/abs/evil.csv": b"x"}, (), "escapes its folder"),
    ({"C:/evil.csv": b"x"}, (), "escapes its folder"),
    ({"a.csv": b"x"}, ("link.png",), "symbolic link"),
    ({"bomb.png": b"\0" * 5_000_000}, (), "ZIP bomb"),
])
def test_dangerous_zips_are_refused(members, symlinks, message):
    with pytest.raises(InputError, match=message):
        open_zip(_zip(members, symlinks))


def test_zip_size_limits_and_a_good_zip_read_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = _zip({"set/a.png": b"p" * 1000, "set/labels.csv": b"image_id,dx\na,mel\n", "__MACOSX/._a.png": b"junk",
                 "set/.hidden/b.png": b"q"})
    with pytest.raises(InputError, match="would unpack to"):
        open_zip(data, max_bytes=500)
    with pytest.raises(InputError, match="entries"):
        open_zip(data, max_members=2)
    with pytest.raises(InputError, match="not a readable ZIP"):
        open_zip(b"PK not really")
    archive = open_zip(data, "clinic.zip")
    assert archive.csvs() == ["set/labels.csv"] and "data" not in repr(archive)
    index = archive.index()
    assert [index.relative(i) for i in range(len(index.files))] == ["set/a.png"] and index.lookup("a") == [0]
    assert archive.read(index.files[0]) == b"p" * 1000
    assert archive.read("clinic.zip/set/labels.csv").startswith(b"image_id")
    with pytest.raises(InputError, match="not in the ZIP"):
        archive.read("clinic.zip/set/missing.png")
    monkeypatch.setattr("core.validation.inputs.ZIP_MAX_FILE_BYTES", 999)
    with pytest.raises(InputError, match="more than the 0 MB accepted for one file"):
        archive.read(index.files[0])
    assert not any(tmp_path.iterdir())  # nothing was unpacked


def test_a_zip_member_larger_than_declared_is_refused_when_read():
    data = bytearray(_zip({"set/a.png": b"p" * 1000}))
    header = data.index(b"PK\x01\x02")  # the central directory's entry declares the size open_zip trusts
    data[header + 24:header + 28] = (10).to_bytes(4, "little")
    archive = open_zip(bytes(data))
    with pytest.raises(InputError, match="could not be read from the ZIP .*CRC"):
        archive.read(archive.index().files[0])


# -- metrics on sets with only some classes ----------------------------------------------------
def _probs(labels: np.ndarray, rng: np.random.Generator, skill: float = 2.0) -> np.ndarray:
    logits = rng.normal(0, 1, (len(labels), 7))
    logits[np.arange(len(labels)), labels] += skill
    return torch.softmax(torch.as_tensor(logits), 1).numpy()


def test_melanoma_vs_nevus_set_says_what_is_not_defined_and_why(rng):
    card = _card()
    labels = np.array([4] * 20 + [5] * 30)
    probs = _probs(labels, rng)
    pred = probs.argmax(1)
    block = validate.metric_block(probs, labels, pred, np.arange(len(labels)), card, n_boot=50)
    assert block["classes_present"] == ["mel", "nv"]
    assert block["balanced_accuracy"]["value"] == pytest.approx(
        np.mean([np.mean(pred[labels == c] == c) for c in (4, 5)]))
    assert block["melanoma"]["auroc"]["value"] is not None and block["malignant"]["auroc"]["ci95"] is not None
    assert block["per_class"]["bcc"]["recall"] == {"value": None, "ci95": None,
                                                   "reason": "no Basal cell carcinoma in this set"}
    only_mel = validate.metric_block(probs[:20], labels[:20], pred[:20], np.arange(20), card, n_boot=50)
    for task in ("melanoma", "malignant"):
        assert only_mel[task]["auroc"]["value"] is None
        assert only_mel[task]["specificity"]["value"] is None and "in this set" in only_mel[task]["specificity"]["reason"]
    assert "no lesions other than melanoma" in only_mel["melanoma"]["auroc"]["reason"]
    only_nv = validate.metric_block(probs[20:], labels[20:], pred[20:], np.arange(30), card, n_boot=50)
    assert only_nv["melanoma"]["sensitivity"]["reason"] == "sensitivity needs positives: no melanomas in this set"
    assert only_nv["melanoma"]["threshold_for_target"]["value"] is None


# -- end to end on real HAM10000 images ---------------------------------------------------------
@pytest.fixture(scope="module")
def ham_subset(ham_dir, tmp_path_factory):
    """Test-split images of every class (copied into a temporary folder), with metadata and lesion ids."""
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv").merge(pd.read_csv(SPLITS_DIR / "ham10000.csv"), on="image_id")
    rows = meta[meta["split"] == "test"].groupby("dx").head(6).sort_values("image_id").reset_index(drop=True)
    folder = tmp_path_factory.mktemp("ham") / "images"
    folder.mkdir()
    for image_id in rows["image_id"]:
        shutil.copy(ham_dir / "images" / f"{image_id}.jpg", folder / f"{image_id}.jpg")
    return rows, folder


def test_ham_subset_matches_core_evaluate_on_the_same_images(ham_subset, default_bundle, tmp_path):
    rows, folder = ham_subset
    csv = tmp_path / "labels.csv"
    rows[["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]].to_csv(csv, index=False)
    predictor = Predictor.load(default_bundle)
    vset = load_set(folder, csv, predictor.card)
    assert (vset.columns.id, vset.columns.label, vset.columns.group) == ("image_id", "dx", "lesion_id")
    report, scored = validate.run(predictor, vset, str(default_bundle), n_boot=200)
    # the same images through the public API, then core.model.evaluate's metrics
    metas = [{"age": None if pd.isna(r.age) else r.age, "sex": r.sex, "site": r.localization} for r in rows.itertuples()]
    preds = predictor.predict_batch([folder / f"{i}.jpg" for i in rows["image_id"]], metas)
    probs = np.array([[p.probs[c] for c in predictor.classes] for p in preds])
    labels = rows["dx"].map(predictor.classes.index).to_numpy()
    np.testing.assert_allclose(scored.probs, probs, atol=1e-5)
    expected = compute_metrics(probs, labels, rows["lesion_id"].to_numpy(), predictor.card, n_boot=200)
    got = report["metrics"]["all"]
    assert got["balanced_accuracy"]["value"] == pytest.approx(expected["balanced_accuracy"])
    assert got["accuracy"]["value"] == pytest.approx(expected["accuracy"])
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    assert got["n_groups"] == expected["n_lesions"]
    for task in ("malignant", "melanoma"):
        assert got[task]["auroc"]["value"] == pytest.approx(expected[task]["auroc"])
        assert got[task]["auroc"]["ci95"] == pytest.approx(expected[task]["auroc_ci95"])
        assert got[task]["sensitivity"]["value"] == pytest.approx(expected[task]["sensitivity"])
        assert got[task]["specificity"]["value"] == pytest.approx(expected[task]["specificity"])
    for code in predictor.classes:
        assert got["per_class"][code]["recall"]["value"] == pytest.approx(expected["per_class"][code]["recall"])
    assert {r["variable"] for r in report["subgroups"]["rows"]} == {"sex", "age band", "body site", "diagnosis confirmation"}
    assert report["reference"]["view"] == "all_inputs"
    assert "lesion_id" in report["bootstrap"]["unit"]


def test_ph2_like_set_with_renamed_labels_and_no_metadata(ham_subset, default_bundle, tmp_path):
    rows, folder = ham_subset
    two = rows[rows["dx"].isin(["mel", "nv"])].reset_index(drop=True)
    labels = two["dx"].map({"mel": "Melanoma", "nv": "Atypical Nevus"}).to_numpy()
    labels[0] = "Klasse X"  # covered by the user's map below
    frame = pd.DataFrame({"Name": two["image_id"], "Clinical Diagnosis": labels, "Note": "x"})
    frame.loc[len(frame)] = ["ISIC_9999999", "Melanoma", "x"]  # an id without an image
    csv = tmp_path / "ph2.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "out"
    first = two["dx"].iloc[0]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"Klasse X": first}))
    code = validate.main(["--images", str(folder), "--labels", str(csv), "--bundle", str(default_bundle),
                          "--out", str(out), "--label-map", str(mapping), "--bootstrap", "100", "--quiet"])
    assert code == 0
    report = json.loads((out / "validation.json").read_text())
    assert report["set"]["classes_present"] == {"mel": 6, "nv": 6}
    assert report["set"]["metadata_given"] == [] and report["reference"]["view"] == "metadata_withheld"
    assert report["set"]["problems"]["ids_without_image"]["items"] == ["ISIC_9999999"]
    assert report["set"]["problems"]["images_without_row"]["count"] == len(rows) - 12
    m = report["metrics"]["all"]
    assert m["balanced_accuracy"]["over"] == ["mel", "nv"] and m["melanoma"]["auroc"]["ci95"] is not None
    assert m["per_class"]["df"]["recall"]["reason"] == "no Dermatofibroma in this set"
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 12 and set(predictions["code"]) == {"mel", "nv"}
    assert {"p_mel", "malignant_risk", "suggested", "quality_flags", "status"} <= set(predictions.columns)
    assert (out / "summary.pdf").read_bytes().startswith(b"%PDF")


# -- the command -------------------------------------------------------------------------------
@pytest.fixture
def small_set(tmp_path):
    folder, csv = synthetic_set(tmp_path, ["Melanoma", "Common Nevus", "nv", "bcc", "Atypical Nevus", "mel"],
                                {"age": ["40", "", "70", "55", "33", "61"], "sex": ["f", "m", "", "f", "m", "f"],
                                 "site": ["back", "posterior torso", "face", "", "armpit", "back"]})
    (folder / "broken.png").write_bytes(b"not an image at all")
    frame = pd.read_csv(csv, dtype=str)
    frame.loc[len(frame)] = ["broken", "nv", "50", "m", "back"]
    frame.to_csv(csv, index=False)
    (folder / "case_dicom.dcm").write_bytes(make_dicom(lesion_like(np.random.default_rng(9)), PatientAge="063Y",
                                                       PatientSex="F", BodyPartExamined="BACK"))
    frame.loc[len(frame)] = ["case_dicom", "mel", "", "", ""]
    frame.to_csv(csv, index=False)
    return folder, csv


def test_command_scores_a_set_with_a_broken_image_and_a_dicom(small_set, tiny_bundle, tmp_path, capsys):
    folder, csv = small_set
    out = tmp_path / "out"
    assert validate.main(["--images", str(folder), "--labels", str(csv), "--bundle", str(tiny_bundle),
                          "--out", str(out), "--bootstrap", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "balanced accuracy (bcc, mel, nv)" in printed and "melanoma AUROC" in printed
    assert "1 image(s) that could not be decoded, skipped: broken.png" in printed
    assert "armpit" in printed and "Per-class recall not defined for akiec, bkl, df, vasc" in printed
    report = json.loads((out / "validation.json").read_text())
    assert report["set"]["scored_images"] == 7
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions.loc[predictions["id"] == "broken", "status"].item().startswith("not scored:")
    dicom = predictions[predictions["id"] == "case_dicom"].iloc[0]
    assert (dicom["age"], dicom["sex"], dicom["site"]) == (63.0, "female", "back")  # filled from the DICOM tags
    assert predictions.loc[predictions["id"] == "case001", "site"].item() == "back"  # ISIC 'posterior torso'


@pytest.mark.parametrize("args, message", [
    (["--label-col", "dx"], "no column 'dx' for the labels"),
    (["--images", "{tmp}/nowhere"], "No such image folder"),
    (["--labels", "{tmp}/nowhere.csv"], "No such label CSV"),
    (["--labels", "{tmp}/other.csv"], "No column of the CSV names the images"),
    (["--labels", "{tmp}/unmapped.csv"], "No column holds labels the model knows"),
    (["--label-map", "{tmp}/badmap.csv"], "which the model does not know"),
    (["--bundle", "{tmp}/nobundle"], "No model card"),
    (["--sample", "0"], "--sample must be at least 1"),
])
def test_command_bad_input_exits_2_with_a_message_and_writes_nothing(small_set, tiny_bundle, tmp_path, capsys,
                                                                      args, message):
    folder, csv = small_set
    (tmp_path / "other.csv").write_text("image_id,dx\nnothing_here,mel\n")
    (tmp_path / "unmapped.csv").write_text("image_id,diagnosis\ncase000,Klasse A\ncase001,Klasse B\n")
    (tmp_path / "badmap.csv").write_text("Klasse A,melanoma\n")
    base = {"--images": str(folder), "--labels": str(csv), "--bundle": str(tiny_bundle), "--out": str(tmp_path / "out")}
    extra = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for flag in extra[::2]:
        base.pop(flag, None)
    argv = [x for kv in base.items() for x in kv] + extra + ["--quiet", "--bootstrap", "10"]
    assert validate.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_command_in_a_fresh_process_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "labels.csv").write_text("image_id,dx\na,mel\n")
    proc = subprocess.run([sys.executable, "-m", "core.validation.validate", "--images", str(tmp_path / "missing"),
                           "--labels", str(tmp_path / "labels.csv")], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2 and "No such image folder" in proc.stderr and "Traceback" not in proc.stderr


def test_refit_writes_a_labelled_copy_and_never_touches_the_source(small_set, tiny_bundle, tmp_path):
    folder, csv = small_set
    before = (tiny_bundle / "model_card.json").read_bytes()
    copy = tmp_path / "local-bundle"
    assert validate.main(["--images", str(folder), "--labels", str(csv), "--bundle", str(tiny_bundle), "--out",
                          str(tmp_path / "out"), "--refit-out", str(copy), "--bootstrap", "10", "--quiet"]) == 0
    assert (tiny_bundle / "model_card.json").read_bytes() == before
    card = read_card(copy)
    assert card["name"].endswith("-local") and card["local_refit"]["n_images"] == 7
    assert "local set" in card["referral_thresholds"]["melanoma"]["how"]
    assert card["referral_thresholds"]["melanoma"]["previous"] == 0.1
    Predictor.load(copy)  # the weights' sha256 still holds
    for target in (copy, tiny_bundle, REPO_ROOT / "weights" / "fusion-lite0"):
        assert validate.main(["--images", str(folder), "--labels", str(csv), "--bundle", str(tiny_bundle), "--out",
                              str(tmp_path / "out2"), "--refit-out", str(target), "--bootstrap", "10", "--quiet"]) == 2


def test_report_texts_and_pdf_from_a_scored_set(small_set, tiny_bundle):
    folder, csv = small_set
    predictor = Predictor.load(tiny_bundle)
    report, _ = validate.run(predictor, load_set(folder, csv, predictor.card), str(tiny_bundle), n_boot=10)
    rows = {r["metric"]: r for r in comparison_rows(report)}
    assert rows["images scored"]["this set"] == "7" and "balanced accuracy (bcc, mel, nv)" in rows
    assert "card" in rows["malignant AUROC"] and text_table(report).count("\n") > 10
    assert pdf_summary(report).startswith(b"%PDF")
    json.dumps(validate.clean_json(report), allow_nan=False)
