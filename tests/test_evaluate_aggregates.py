"""The performance page's aggregates: operating points, calibration bins, curves, subgroups,
checked against values worked out by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from core import config
from core.model.calibration import ece_from_bins, expected_calibration_error, fit_temperature, reliability_bins
from core.model.evaluate import (
    age_band,
    binary_curves,
    centre_square,
    deployed_scorers,
    difference_verdict,
    operating_points,
    performance_aggregates,
    sensitivity_at_specificity,
    subgroup_metrics,
)

TRUTH = np.array([1, 1, 1, 1, 0, 0, 0, 0])
SCORE = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1])


def card() -> dict:
    return {
        "classes": list(config.CLASSES), "malignant": list(config.MALIGNANT), "melanoma": config.MELANOMA,
        "temperature": 1.0, "referral_thresholds": {"malignant": {"threshold": 0.5}},
    }


def test_operating_points_by_hand() -> None:
    rows = {r["target_sensitivity"]: r for r in operating_points(TRUTH, SCORE, (0.75, 1.0))}
    # 75%: the 3rd-highest positive score (0.7) is the threshold; no negative reaches it.
    assert rows[0.75]["threshold"] == pytest.approx(0.7)
    assert rows[0.75]["sensitivity"] == pytest.approx(0.75)
    assert rows[0.75]["specificity"] == pytest.approx(1.0)
    # 100%: threshold 0.3 refers 0.6 and 0.4 too: specificity 2/4; 6 of 8 referred.
    assert rows[1.0]["threshold"] == pytest.approx(0.3)
    assert rows[1.0]["sensitivity"] == pytest.approx(1.0)
    assert rows[1.0]["specificity"] == pytest.approx(0.5)
    assert rows[1.0]["referred_fraction"] == pytest.approx(0.75)


def test_sensitivity_at_specificity_by_hand() -> None:
    # 80% specificity with 4 negatives allows no false positive: 3 of 4 positives at threshold 0.7.
    sens, thr = sensitivity_at_specificity(TRUTH, SCORE, 0.80)
    assert sens == pytest.approx(0.75)
    assert thr == pytest.approx(0.7)
    # 50% specificity allows 2 false positives (0.6, 0.4): every positive is caught.
    assert sensitivity_at_specificity(TRUTH, SCORE, 0.50)[0] == pytest.approx(1.0)


def test_reliability_bins_and_ece_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.85, 0.15], [0.65, 0.35], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    bins = reliability_bins(probs, labels, n_bins=5)
    assert bins["count"] == [0, 0, 0, 2, 2]
    assert bins["confidence"][3] == pytest.approx(0.675)
    assert bins["accuracy"][3] == pytest.approx(1.0)
    assert bins["confidence"][4] == pytest.approx(0.875)
    assert bins["accuracy"][4] == pytest.approx(0.5)
    assert np.isnan(bins["confidence"][0])
    # 0.5 * |1 - 0.675| + 0.5 * |0.5 - 0.875| = 0.1625 + 0.1875
    assert ece_from_bins(bins) == pytest.approx(0.35)
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.35)


def test_temperature_scaling_reduces_ece_of_overconfident_logits(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 3, 400)
    logits = rng.normal(0, 1, (400, 3))
    logits[np.arange(400), labels] += 1.0
    logits = torch.tensor(logits * 6.0, dtype=torch.float32)  # the same ranking, far too confident
    temperature = fit_temperature(logits, labels)
    assert temperature > 2.0
    cal_card = {**card(), "classes": ["a", "b", "c"], "malignant": ["a"], "melanoma": "b", "temperature": temperature}
    agg = performance_aggregates(logits, labels, np.arange(400), cal_card, n_boot=20)
    for risk in ("top", "malignant", "melanoma"):
        assert ece_from_bins(agg["reliability"][risk]["after"]) < ece_from_bins(agg["reliability"][risk]["before"])


def test_binary_curves_are_thinned_and_keep_their_ends(rng: np.random.Generator) -> None:
    truth = rng.integers(0, 2, 5000)
    score = rng.random(5000) + truth * 0.3
    curves = binary_curves(truth, score, n_points=100)
    assert len(curves["roc"]["fpr"]) <= 100 and len(curves["pr"]["recall"]) <= 100
    assert curves["roc"]["fpr"][0] == 0.0 and curves["roc"]["tpr"][-1] == 1.0
    assert 0.5 < curves["auroc"] < 1.0
    assert binary_curves(np.zeros(10, dtype=int), np.arange(10.0)) is None


def test_age_band() -> None:
    bands = age_band(pd.Series([5.0, 30.0, 59.0, 74.9, 80.0, np.nan]))
    assert bands.tolist() == ["<30", "30-44", "45-59", "60-74", "75+", "unknown"]


def test_subgroup_metrics_counts_and_values() -> None:
    mel, nv = config.CLASSES.index("mel"), config.CLASSES.index("nv")
    labels = np.array([mel, nv, mel, nv])
    probs = np.zeros((4, len(config.CLASSES)))
    probs[[0, 1, 2, 3], [mel, nv, nv, nv]] = 1.0  # the second melanoma is missed
    frame = pd.DataFrame({
        "sex": ["male", "male", "female", "female"], "age": [40.0, 40.0, 70.0, np.nan],
        "age_missing": [False, False, False, True], "site": ["back"] * 4,
        "dx_type": ["histo"] * 4, "group_id": ["a", "a", "b", "c"],
    })
    rows = {(r["variable"], r["group"]): r for r in subgroup_metrics(probs, labels, frame, card(), n_boot=50)}
    male, female = rows[("sex", "male")], rows[("sex", "female")]
    assert (male["n_images"], male["n_lesions"], male["melanoma"]) == (2, 1, 1)
    assert male["accuracy"] == 1.0 and male["malignant_sensitivity"] == 1.0
    assert female["accuracy"] == 0.5 and female["malignant_sensitivity"] == 0.0
    assert rows[("age band", "unknown")]["n_images"] == 1
    assert rows[("body site", "back")]["n_images"] == 4


def test_subgroup_rows_carry_intervals() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(config.CLASSES), 300)
    probs = rng.dirichlet(np.ones(len(config.CLASSES)), 300)
    frame = pd.DataFrame({"sex": rng.choice(["male", "female"], 300), "age": 50.0, "age_missing": False,
                          "site": "back", "dx_type": "histo", "group_id": np.arange(300) // 2})
    rows = subgroup_metrics(probs, labels, frame, card(), n_boot=50)
    for row in rows:
        lo, hi = row["balanced_accuracy_ci95"]
        assert lo <= row["balanced_accuracy"] <= hi and hi - lo > 0


def test_paired_difference_by_construction() -> None:
    from sklearn.metrics import roc_auc_score

    from core.model.evaluate import paired_difference

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 400)
    good, noisy = truth + rng.normal(0, 0.5, 400), truth + rng.normal(0, 2.0, 400)
    groups = np.arange(400) // 2

    def auc(score: np.ndarray):
        return lambda rows: roc_auc_score(truth[rows], score[rows]) if 0 < truth[rows].sum() < len(rows) else float("nan")

    diff, lo, hi = paired_difference(auc(good), auc(noisy), groups, n_boot=200)
    assert 0 < lo < diff < hi
    assert paired_difference(auc(good), auc(good), groups, n_boot=50) == (0.0, 0.0, 0.0)


def test_centre_square_takes_the_middle_of_the_longer_side() -> None:
    image = np.zeros((150, 200, 3), dtype=np.uint8)
    image[:, 25:175] = 255  # the central 150 columns
    crop = centre_square(image)
    assert crop.shape == (150, 150, 3) and crop.min() == 255
    portrait = np.arange(200 * 150).reshape(200, 150)
    assert np.array_equal(centre_square(portrait), portrait[25:175])


def test_difference_verdict_calls_an_interval_holding_zero_a_tie() -> None:
    assert difference_verdict(-0.01, 0.03) == "tie" and difference_verdict(0.0, 0.03) == "tie"
    assert difference_verdict(0.002, 0.03) == "better" and difference_verdict(-0.05, -0.01) == "worse"
    # separately trained models: one or two trainings each are no basis for a claim, three are
    assert difference_verdict(-0.05, -0.01, trainings=1) == "unconfirmed"
    assert difference_verdict(0.002, 0.03, trainings=2) == "unconfirmed"
    assert difference_verdict(-0.01, 0.03, trainings=1) == "tie"
    assert difference_verdict(0.002, 0.03, trainings=3) == "better"


def test_deployed_scorers_by_hand() -> None:
    labels = np.array([4, 4, 5, 5])  # mel, mel, nv, nv
    probs = np.full((4, 7), 0.05)
    probs[[0, 1, 2, 3], [4, 5, 5, 5]] = 0.7  # one melanoma called a nevus
    probs[1, 4] = 0.2  # ...but ranked above both nevi for melanoma
    score = deployed_scorers(card(), labels)
    every = np.arange(4)
    assert score["balanced_accuracy"](every, probs) == pytest.approx(0.75)  # mel recall 1/2, nv recall 2/2
    assert score["melanoma_auroc"](every, probs) == 1.0
    assert np.isnan(score["melanoma_auroc"](np.array([2, 3]), probs))  # no melanoma in the resample
