"""core.clinic.quality, core.clinic.ood and core.clinic.dicom: quality flags and grades, the OOD score and its card round trip, DICOM reading."""
from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from core.clinic import dicom, quality
from core.clinic import ood as ood_module
from core.clinic.ood import OODModel
from core.errors import InputError
from core.inference import Predictor


def lesion_like(rng: np.random.Generator, size: tuple[int, int] = (150, 200)) -> np.ndarray:
    """Skin-toned noise with a dark blob: sharp, mid-bright, like a dermoscopic image."""
    h, w = size
    img = np.clip(rng.normal((200, 150, 130), 25, (h, w, 3)), 0, 255).astype(np.uint8)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (90, 60, 50), -1)
    return img


def test_a_good_image_raises_no_flag(rng):
    report = quality.check_image(lesion_like(rng))
    assert report.ok and report.summary == "ok"


def test_real_image_raises_no_flag(real_image):
    assert quality.check_image(Image.open(real_image)).ok


@pytest.mark.parametrize(
    "transform, flag",
    [
        (lambda a: cv2.resize(a, (80, 60)), "too small"),
        (lambda a: cv2.GaussianBlur(a, (15, 15), 0), "blurry"),
        (lambda a: (a * 0.15).astype(np.uint8), "too dark"),
        (lambda a: np.clip(a.astype(int) + 140, 0, 255).astype(np.uint8), "too bright"),
    ],
)
def test_each_problem_is_flagged_with_a_message(rng, transform, flag):
    report = quality.check_image(transform(lesion_like(rng)))
    assert flag in report.flags
    assert len(report.messages) == len(report.flags)
    assert flag in report.summary


def test_a_greyscale_image_gets_a_colour_warning(rng):
    colour = lesion_like(rng)
    grey = np.repeat(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    report = quality.check_image(grey)
    assert report.flags == ["greyscale"] and "colour" in report.messages[0]
    assert report.grade == "poor quality" and not report.withheld
    assert "greyscale" not in quality.check_image(colour).flags


def test_the_grade_is_the_worst_flag():
    report = quality.QualityReport(200, 150, 50.0, 120.0, 40.0)
    assert (report.grade, report.withheld, report.summary) == ("ok", False, "ok")
    report.add("blurry", "Out of focus.")
    assert report.grade == "poor quality"
    report.add("unlike training images", "Unusual.")
    assert report.grade == "unusual image" and not report.withheld
    report.add("not dermoscopy", "Not dermoscopy.")
    assert report.grade == "not dermoscopy" and report.withheld and not report.ok
    assert report.as_dict()["grade"] == "not dermoscopy" and report.as_dict()["withheld"] is True
    assert report.summary == "blurry, unlike training images, not dermoscopy" and len(report.messages) == 3
    with pytest.raises(ValueError):
        report.add("odd", "A flag without a grade.")


def test_sharpness_does_not_depend_on_resolution(real_image):
    small = np.asarray(Image.open(real_image).convert("RGB"))
    large = cv2.resize(small, (600, 450), interpolation=cv2.INTER_CUBIC)  # the camera's original size
    assert quality.sharpness(large) == pytest.approx(quality.sharpness(small), rel=0.3)


# -- OOD ----------------------------------------------------------------------------------
def test_ood_scores_far_points_higher_and_round_trips_through_json(rng):
    train = rng.normal(0, 1, (400, 32)) * np.linspace(3, 0.5, 32)
    model = OODModel.fit(train, k=5)
    threshold = model.calibrate(rng.normal(0, 1, (200, 32)) * np.linspace(3, 0.5, 32), 0.99)
    near = model.score(rng.normal(0, 1, (50, 32)) * np.linspace(3, 0.5, 32))
    far = model.score(rng.normal(0, 1, (50, 32)) * 6 + 4)
    assert np.mean(near <= threshold) > 0.9 and np.all(far > threshold)
    again = OODModel.from_dict(json.loads(json.dumps(model.to_dict("test"))))
    np.testing.assert_allclose(again.score(train[:10]), model.score(train[:10]), rtol=1e-4)
    assert again.threshold == pytest.approx(threshold)


def test_ood_with_class_means_does_not_flag_a_rare_class(rng):
    spread = np.linspace(3, 0.5, 32)
    common = rng.normal(0, 1, (600, 32)) * spread
    rare = rng.normal(0, 1, (30, 32)) * spread + 8  # a rare diagnosis, far from the common one
    features, labels = np.vstack([common, rare]), np.r_[["nv"] * 600, ["vasc"] * 30]
    val = np.vstack([rng.normal(0, 1, (300, 32)) * spread, rng.normal(0, 1, (15, 32)) * spread + 8])
    val_labels = np.r_[["nv"] * 300, ["vasc"] * 15]
    new_rare, new_common = rng.normal(0, 1, (50, 32)) * spread + 8, rng.normal(0, 1, (50, 32)) * spread
    by_class = OODModel.fit(features, k=5, labels=labels)
    by_class.calibrate(val, 0.99, val_labels)
    assert by_class.means.shape == (2, 32)
    assert np.median(by_class.score(new_rare)) < 1.2 * np.median(by_class.score(new_common))
    assert np.mean(by_class.score(new_rare) > by_class.threshold) < 0.1
    assert np.all(by_class.score(rng.normal(0, 1, (20, 32)) * 6 - 8) > by_class.threshold)
    again = OODModel.from_dict(json.loads(json.dumps(by_class.to_dict())))
    np.testing.assert_allclose(again.score(new_rare), by_class.score(new_rare), rtol=1e-4)


def test_ood_reads_a_card_written_with_one_mean(rng):
    model = OODModel.fit(rng.normal(size=(50, 8)), k=3)
    old = model.to_dict()
    old["mean"] = ood_module.pack_array(model.means[0])
    del old["means"]
    np.testing.assert_allclose(OODModel.from_dict(old).score(np.ones((1, 8))), model.score(np.ones((1, 8))), rtol=1e-4)


def test_ood_refuses_a_wrong_feature_width_and_a_broken_card(rng):
    model = OODModel.fit(rng.normal(size=(50, 8)), k=3)
    with pytest.raises(InputError):
        model.score(np.zeros((1, 9)))
    with pytest.raises(InputError):
        OODModel.from_dict({"mean": {"shape": [2], "data": "!!"}})


def test_distribution_check_flags_an_image_unlike_the_training_ones(tiny_bundle, rng):
    predictor = Predictor.load(tiny_bundle)
    from core.clinic.ood import image_features

    train = np.stack([predictor.image_tensor(lesion_like(rng)) for _ in range(24)])
    import torch

    ood = OODModel.fit(image_features(predictor.model, torch.as_tensor(train)), k=4)
    ood.calibrate(image_features(predictor.model, torch.as_tensor(train)), 1.0)
    odd = np.zeros((150, 200, 3), np.uint8)
    odd[:, ::2] = (0, 255, 0)  # green stripes: nothing like skin
    features = image_features(predictor.model, predictor.image_tensor(odd)[None])[0]
    report = quality.check_distribution(quality.check_image(odd), features, ood)
    assert "unlike training images" in report.flags and report.ood_score > report.ood_threshold
    card = {**predictor.card, "ood": ood.to_dict()}
    assert quality.ood_model(card) is not None and quality.ood_model(predictor.card) is None


# -- DICOM --------------------------------------------------------------------------------
def make_dicom(pixels: np.ndarray, **tags) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8 * pixels.dtype.itemsize
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


SITES = sorted({"back", "face", "upper extremity", "lower extremity", "torso", "head/neck", "hand"})


def test_dicom_image_and_tags(rng):
    pixels = lesion_like(rng)
    data = make_dicom(pixels, PatientAge="063Y", PatientSex="F", BodyPartExamined="BACK")
    assert dicom.is_dicom(data)
    case = dicom.read_dicom(data, SITES)
    np.testing.assert_array_equal(np.asarray(case.image), pixels)
    assert case.metadata == {"age": 63.0, "sex": "female", "site": "back"}


def test_dicom_without_tags_and_greyscale(rng):
    case = dicom.read_dicom(make_dicom(lesion_like(rng)[..., 0]), SITES)
    assert case.image.mode == "RGB" and case.metadata == {}


@pytest.mark.parametrize(
    "raw, expected",
    [("045Y", 45.0), ("006M", 0.5), ("abc", None), (None, None)],
)
def test_dicom_age(raw, expected):
    assert dicom.parse_age(raw) == expected


def test_dicom_site_synonyms():
    assert dicom.parse_site(["ARM"], SITES) == "upper extremity"
    assert dicom.parse_site(["LOWER_EXTREMITY"], SITES) == "lower extremity"
    assert dicom.parse_site(["SPLEEN"], SITES) is None


def test_bad_dicoms_are_refused(rng):
    with pytest.raises(InputError, match="16-bit"):
        dicom.read_dicom(make_dicom((lesion_like(rng)[..., 0].astype(np.uint16) * 200)), SITES)
    with pytest.raises(InputError):
        dicom.read_dicom(b"not a dicom file at all" * 10, SITES)
    bomb = make_dicom(lesion_like(rng, (40, 40)), Rows=50_000, Columns=50_000)
    with pytest.raises(InputError, match="megapixels"):
        dicom.read_dicom(bomb, SITES)
