"""Calibration: the prior-shift bias undoes class-weighted training, the decision rule lifts
balanced accuracy, and the card round trip (including cards written before it existed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model.calibration import (
    Calibration,
    balanced_accuracy,
    binary_reliability,
    ece_from_bins,
    fit_calibration,
    prior_shift_bias,
)

COUNTS = np.array([300, 500, 1000, 100, 1100, 4800, 140])  # HAM10000-like training counts


def weighted_logits(rng: np.random.Generator, n: int, mode: str) -> tuple[torch.Tensor, np.ndarray]:
    """Labels drawn from the training prior, and the logits a class-weighted model would give:
    exact log posteriors plus the log of the loss weights (the prior shift weighting causes)."""
    prior = COUNTS / COUNTS.sum()
    labels = rng.choice(len(COUNTS), n, p=prior)
    evidence = rng.normal(0, 1.0, (n, len(COUNTS)))
    evidence[np.arange(n), labels] += 2.0
    log_post = np.log(prior) + 2.0 * evidence  # exact: the log-likelihood of a mean shift of 2 is 2 * e_k + const
    log_post -= np.log(np.exp(log_post).sum(1, keepdims=True))
    weights = {"inverse": 1 / COUNTS, "sqrt-inverse": 1 / np.sqrt(COUNTS)}[mode]
    return torch.tensor(log_post + np.log(weights), dtype=torch.float32), labels


@pytest.mark.parametrize("mode", ["inverse", "sqrt-inverse"])
def test_prior_shift_bias_undoes_class_weighting(mode: str) -> None:
    rng = np.random.default_rng(0)
    logits, labels = weighted_logits(rng, 20000, mode)
    rare = [0, 1, 4]  # "malignant"
    truth = np.isin(labels, rare).astype(float)
    naive = Calibration.identity(7).probs(logits)[:, rare].sum(1)
    calib = fit_calibration(logits, labels, COUNTS, mode)
    fixed = calib.probs(logits)[:, rare].sum(1)
    assert naive.mean() > truth.mean() + 0.03  # weighting overstates the rare classes' risk
    assert fixed.mean() == pytest.approx(truth.mean(), abs=0.01)
    assert calib.temperature == pytest.approx(1.0, abs=0.05)
    assert ece_from_bins(binary_reliability(truth, fixed)) < 0.015 < ece_from_bins(binary_reliability(truth, naive))


def test_prior_shift_bias_without_weights_is_zero() -> None:
    assert np.all(prior_shift_bias(COUNTS, "none") == 0)


def test_decision_rule_raises_balanced_accuracy_and_leaves_risks_alone() -> None:
    rng = np.random.default_rng(1)
    logits, labels = weighted_logits(rng, 20000, "inverse")
    calib = fit_calibration(logits, labels, COUNTS, "inverse")
    probs = calib.probs(logits)
    plain = balanced_accuracy(labels, probs.argmax(1))
    assert calib.alpha > 0.5
    assert balanced_accuracy(labels, calib.suggest(probs)) > plain + 0.05
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_card_round_trip_and_old_cards() -> None:
    calib = Calibration(np.arange(7.0) / 10, 1.3, np.log(COUNTS / COUNTS.sum()), 0.45)
    again = Calibration.from_card({"classes": list("abcdefg"), "calibration": calib.to_card()})
    assert np.allclose(again.bias, calib.bias) and again.temperature == pytest.approx(1.3) and again.alpha == 0.45
    old = Calibration.from_card({"classes": list("abcdefg"), "temperature": 2.0})
    logits = torch.tensor([[2.0, 0, 0, 0, 0, 0, 0]])
    assert np.allclose(old.probs(logits), torch.softmax(logits / 2.0, 1).numpy())
    assert old.suggest(old.probs(logits))[0] == 0


def test_fitted_bias_corrects_a_shift_the_weights_do_not_explain() -> None:
    """Logits shifted by something other than the loss weights (here: the inverse weights' shift plus
    an extra push on class 5): the prior-shift bias leaves a gap that the fitted bias closes."""
    rng = np.random.default_rng(2)
    logits, labels = weighted_logits(rng, 20000, "inverse")
    logits[:, 5] -= 0.7
    truth = (labels == 5).astype(float)
    fixed = fit_calibration(logits, labels, COUNTS, "inverse", "prior-shift").probs(logits)[:, 5]
    fitted = fit_calibration(logits, labels, COUNTS, "inverse", "bias")
    assert abs(fitted.probs(logits)[:, 5].mean() - truth.mean()) < 0.01 < abs(fixed.mean() - truth.mean())
    assert fitted.method == "bias"
    again = Calibration.from_card({"classes": list("abcdefg"), "calibration": fitted.to_card()})
    assert again.method == "bias" and np.allclose(again.bias, fitted.bias, atol=1e-5)
    with pytest.raises(ValueError):
        fit_calibration(logits, labels, COUNTS, "inverse", "isotonic")
