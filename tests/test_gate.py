"""core.clinic.gate and core.clinic.gate_negatives: the generated negatives, the gate's fit, threshold and card
round trip, and the gate withholding a screenshot inside the Predictor."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from core.clinic import gate as gate_mod
from core.clinic import quality
from core.clinic.gate import STATISTICS, Gate, choose_threshold, design, flag_rates, image_statistics, rgb_design
from core.clinic.gate_negatives import FAMILIES, _half, make_negative, negatives
from core.errors import InputError
from core.inference import Predictor
from core.model.bundle import read_card


def lesion_like(rng: np.random.Generator, size: tuple[int, int] = (150, 200)) -> np.ndarray:
    """Skin-toned noise with a dark blob, darker corners: a stand-in for a dermoscopic image."""
    h, w = size
    img = np.clip(rng.normal((200, 150, 130), 25, (h, w, 3)), 0, 255).astype(np.uint8)
    cv2.circle(img, (w // 2 + int(rng.integers(-20, 20)), h // 2), int(min(h, w) * rng.uniform(0.15, 0.3)),
               (90, 60, 50), -1)
    return img


# -- negatives ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_makes_a_valid_repeatable_image(family):
    image = make_negative(family, "fit", 0)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 64  # never below what the app accepts
    np.testing.assert_array_equal(image, make_negative(family, "fit", 0))


def test_held_out_negatives_differ_from_fitted_ones():
    for family in ("inbox", "photo", "noise"):
        assert not np.array_equal(make_negative(family, "fit", 1), make_negative(family, "test", 1))
    source = np.arange(40).reshape(2, 20)
    assert set(_half(source, "fit").ravel()).isdisjoint(_half(source, "test").ravel())


def test_negatives_yields_each_family_in_turn_and_refuses_unknown_names():
    pairs = list(negatives("test", 2, ["plain", "gradient"]))
    assert [family for family, _ in pairs] == ["plain", "plain", "gradient", "gradient"]
    with pytest.raises(InputError):
        make_negative("plain", "train", 0)
    with pytest.raises(InputError):
        make_negative("selfie", "fit", 0)


# -- statistics ---------------------------------------------------------------------------
def test_statistics_tell_a_screenshot_from_a_lesion(rng):
    lesion, screen = image_statistics(lesion_like(rng)), image_statistics(make_negative("inbox", "fit", 0))
    assert lesion.shape == screen.shape == (len(STATISTICS),) and np.isfinite(lesion).all()
    named = dict(zip(STATISTICS, screen))
    assert named["flat share"] > dict(zip(STATISTICS, lesion))["flat share"]
    grey = image_statistics(np.repeat(cv2.cvtColor(lesion_like(rng), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))
    assert dict(zip(STATISTICS, grey))["chroma mean"] == 0 and dict(zip(STATISTICS, grey))["grey share"] == 1


def test_statistics_refuse_a_non_rgb_array():
    with pytest.raises(InputError):
        image_statistics(np.zeros((10, 10), np.uint8))
    with pytest.raises(InputError):
        design(np.zeros((2, 5)), np.zeros((3, len(STATISTICS))))


# -- fit and threshold --------------------------------------------------------------------
def synthetic_rows(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    return rng.normal(shift, 1, (n, 8 + len(STATISTICS)))


def test_fit_separates_the_two_sides(rng):
    gate = Gate.fit(synthetic_rows(rng, 200, 0), synthetic_rows(rng, 200, 2.5), c=1.0)
    assert np.mean(gate.score(synthetic_rows(rng, 100, 0)) < 0.5) > 0.95
    assert np.mean(gate.score(synthetic_rows(rng, 100, 2.5)) > 0.5) > 0.95
    assert gate.n_features == 8


def test_threshold_protects_the_worst_class_and_never_goes_below_the_floor():
    common = np.linspace(0.0, 0.3, 1000)  # a common class, far below 0.5
    rare = np.r_[np.linspace(0.0, 0.4, 19), 0.9]  # a rare class with one odd image
    scores, labels = np.r_[common, rare], np.r_[["nv"] * 1000, ["vasc"] * 20]
    threshold = choose_threshold(scores, labels, max_rate=0.01)
    assert threshold == pytest.approx(0.9)  # 1 % of 20 images: the rare class's highest score
    assert flag_rates(scores, labels, threshold) == {"nv": 0.0, "vasc": 0.0}
    assert choose_threshold(common, ["nv"] * 1000, max_rate=0.01) == 0.5


def test_gate_round_trips_through_a_json_card(rng):
    gate = Gate.fit(synthetic_rows(rng, 100, 0), synthetic_rows(rng, 100, 2), c=1.0)
    gate.threshold = 0.7
    again = Gate.from_dict(json.loads(json.dumps(gate.to_dict("test", {"note": 1}))))
    rows = synthetic_rows(rng, 10, 1)
    np.testing.assert_allclose(again.score(rows), gate.score(rows), rtol=1e-4, atol=1e-6)
    assert again.threshold == pytest.approx(0.7)
    with pytest.raises(InputError):
        again.score(rows[:, 1:])  # a model with another feature width
    with pytest.raises(InputError):
        Gate.from_dict({**gate.to_dict(), "statistics": ["chroma mean"]})
    with pytest.raises(InputError):
        Gate.from_dict({**gate.to_dict(), "coef": {"shape": [2], "data": "!!"}})


# -- the gate inside the Predictor ---------------------------------------------------------
@pytest.fixture(scope="module")
def gated_predictor(tiny_bundle) -> Predictor:
    """The tiny bundle with a gate fitted on its own features: lesion stand-ins against negatives."""
    plain = Predictor.load(tiny_bundle)
    rng = np.random.default_rng(1)
    lesions = [lesion_like(rng) for _ in range(40)]
    shots = [make_negative(family, "fit", i) for family in ("inbox", "document", "text card", "chart") for i in range(6)]
    gate = Gate.fit(rgb_design(plain.model, plain.card, lesions), rgb_design(plain.model, plain.card, shots), c=1.0)
    return Predictor(plain.model, {**plain.card, "gate": gate.to_dict("test")})


def test_a_screenshot_is_withheld_and_a_lesion_is_shown(gated_predictor, rng):
    shot, lesion = gated_predictor.predict_batch([make_negative("inbox", "test", 0), lesion_like(rng)])
    assert shot.quality.withheld and shot.quality.grade == "not dermoscopy" and "not dermoscopy" in shot.flags
    assert shot.quality.gate_score > shot.quality.gate_threshold
    assert "not dermoscopy" not in lesion.flags and not lesion.quality.withheld
    assert shot.quality.as_dict()["withheld"] is True and "not dermoscopy" in shot.quality.summary


def test_a_card_without_a_gate_skips_the_check(tiny_bundle, rng):
    prediction = Predictor.load(tiny_bundle).predict(lesion_like(rng))
    assert prediction.quality.gate_score is None and quality.gate_model(Predictor.load(tiny_bundle).card) is None


def test_the_command_writes_a_gate_into_the_card(tiny_bundle, ham_dir, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    gate_mod.main(["--bundle", str(bundle), "--data", str(ham_dir), "--limit", "40", "--negatives", "2",
                   "--per-class", "4", "--c", "1.0"])
    section = read_card(bundle)["gate"]
    assert Gate.from_dict(section).threshold >= 0.5
    assert set(section["negative_families"]) == set(FAMILIES) and set(section["validation_flag_rate"]) <= {
        "akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"}
