"""From logits to risks a clinician can read, and to one suggested class.

Two separate things, both fitted on the validation split and stored in the card's
"calibration" section:

1. **Calibrated probabilities.** Training with class weights w_i acts like training under a
   prior proportional to n_i * w_i instead of the real n_i, so every probability is pushed
   towards the rare classes (the malignant risk was overstated 1.5x). Adding log(1 / w_i) to
   the logits undoes that shift exactly (the prior-shift correction of Saerens et al. 2002);
   a temperature, fitted on validation NLL, then corrects the confidence (Guo et al. 2017).

       p = softmax((logits + bias) / T),   bias_i = -log w_i

2. **The suggested class.** Argmax of calibrated probabilities favours common classes (nevi),
   which costs balanced accuracy. The decision rule divides each probability by the training
   prior raised to a power alpha, argmax_i p_i / prior_i^alpha: alpha = 0 is the plain argmax,
   alpha = 1 the rule that maximises balanced accuracy when the probabilities are exact. One
   parameter, chosen on validation balanced accuracy, so it cannot overfit the tiny classes.
   The risks shown stay the calibrated probabilities; only the suggested class uses the rule.

A card written before this module (only "temperature") loads as bias 0 and alpha 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ALPHA_GRID: tuple[float, ...] = tuple(np.round(np.arange(0.0, 1.0001, 0.05), 2))


@dataclass
class Calibration:
    """bias (added to the logits), temperature, and the decision rule's log-prior offsets."""

    bias: np.ndarray
    temperature: float
    log_prior: np.ndarray
    alpha: float
    method: str = "prior-shift"

    # -- use ------------------------------------------------------------------------------
    def torch_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities, differentiable (for SHAP and CAM wrappers)."""
        bias = torch.as_tensor(self.bias, dtype=logits.dtype, device=logits.device)
        return torch.softmax((logits + bias) / self.temperature, dim=-1)

    def probs(self, logits: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.torch_probs(logits).cpu().numpy()

    def decision_scores(self, probs: np.ndarray) -> np.ndarray:
        """log p_i - alpha * log prior_i: the suggested class is the largest."""
        return np.log(np.clip(probs, 1e-12, 1.0)) - self.alpha * self.log_prior

    def suggest(self, probs: np.ndarray) -> np.ndarray:
        """Index of the suggested class for each row of `probs` (or for one row)."""
        return np.argmax(self.decision_scores(probs), axis=-1)

    # -- card round trip ------------------------------------------------------------------
    @classmethod
    def identity(cls, k: int, temperature: float = 1.0) -> "Calibration":
        """Plain softmax (divided by `temperature`) and plain argmax."""
        return cls(np.zeros(k), temperature, np.zeros(k), 0.0)

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> "Calibration":
        section = card.get("calibration")
        if not section:
            return cls.identity(len(card["classes"]), float(card.get("temperature", 1.0)))
        return cls(np.asarray(section["bias"], dtype=float), float(section["temperature"]),
                   np.asarray(section["log_prior"], dtype=float), float(section["alpha"]),
                   section.get("method", "prior-shift"))

    def to_card(self) -> dict[str, Any]:
        return {
            "bias": [round(float(b), 6) for b in self.bias],
            "temperature": round(float(self.temperature), 6),
            "log_prior": [round(float(v), 6) for v in self.log_prior],
            "alpha": float(self.alpha),
            "method": self.method,
            "probabilities": "softmax((logits + bias) / temperature); " + (
                "bias = -log(class weight) undoes the training loss's class weighting, the temperature is fitted "
                "on validation NLL" if self.method == "prior-shift" else
                "bias and temperature fitted jointly on validation NLL, started from the class weights' prior shift"),
            "suggested_class": "argmax of probability / training prior ** alpha; alpha chosen on validation "
                               "balanced accuracy",
        }


# -- fitting ------------------------------------------------------------------------------
def prior_shift_bias(train_counts: np.ndarray, weights_mode: str) -> np.ndarray:
    """-log of the loss's class weights (up to a constant), which undoes their prior shift."""
    counts = np.maximum(np.asarray(train_counts, dtype=float), 1.0)
    if weights_mode == "inverse":
        return np.log(counts) - np.log(counts).mean()
    if weights_mode == "sqrt-inverse":
        return 0.5 * (np.log(counts) - np.log(counts).mean())
    return np.zeros_like(counts)


def fit_temperature(logits: torch.Tensor, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar T minimising NLL."""
    log_t = torch.zeros(1, requires_grad=True)
    target = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    opt.step(closure)
    # Bounded, so a degenerate validation set cannot flatten every prediction to uniform.
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (what calibration is fitted and chosen on)."""
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `labels` (sklearn's, without its warning on absent classes)."""
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)])) if len(labels) else float("nan")


def fit_bias_and_temperature(logits: torch.Tensor, labels: np.ndarray, init_bias: np.ndarray) -> tuple[np.ndarray, float]:
    """Bias-corrected temperature scaling (Alexandari et al. 2020): a bias per class and one
    temperature, jointly minimising NLL, started from the prior-shift bias. 8 parameters for 7
    classes: it can correct a shift that the class weights alone do not explain (label smoothing,
    the rare classes' own over- or under-confidence)."""
    log_t = torch.zeros(1, requires_grad=True)
    scaled_bias = torch.tensor(init_bias, dtype=logits.dtype).clone().requires_grad_(True)  # bias / T
    target = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.LBFGS([log_t, scaled_bias], lr=0.1, max_iter=500)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp() + scaled_bias, target)
        loss.backward()
        return loss

    opt.step(closure)
    temperature = float(np.clip(log_t.exp().item(), 0.05, 20.0))
    bias = scaled_bias.detach().numpy().astype(float) * temperature
    return bias - bias.mean(), temperature


METHODS = ("prior-shift", "bias")


def fit_calibration(logits: torch.Tensor, labels: np.ndarray, train_counts: np.ndarray,
                    weights_mode: str, method: str = "prior-shift") -> Calibration:
    """Fit the probabilities' calibration and the decision rule's alpha on held-out logits.

    `method="prior-shift"`: the bias is the loss weights' prior shift, only T is fitted;
    `method="bias"`: the bias is fitted too (started from the prior shift).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown calibration method {method!r}; choose from {', '.join(METHODS)}.")
    bias = prior_shift_bias(train_counts, weights_mode)
    if method == "bias":
        bias, temperature = fit_bias_and_temperature(logits.detach(), labels, bias)
    else:
        temperature = fit_temperature((logits + torch.as_tensor(bias, dtype=logits.dtype)).detach(), labels)
    counts = np.maximum(np.asarray(train_counts, dtype=float), 1.0)
    log_prior = np.log(counts / counts.sum())
    calib = Calibration(bias, temperature, log_prior, 0.0)
    probs = calib.probs(logits)
    scores = [balanced_accuracy(labels, Calibration(bias, temperature, log_prior, a).suggest(probs)) for a in ALPHA_GRID]
    calib.alpha = float(ALPHA_GRID[int(np.argmax(scores))])  # ties: the smallest alpha
    calib.method = method
    return calib


# -- measuring ----------------------------------------------------------------------------
def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, list]:
    """Top-label reliability diagram: per equal-width confidence bin, mean confidence, accuracy, count.

    Empty bins hold NaN confidence/accuracy and count 0, so the page can plot the bins as they are.
    """
    return binary_reliability((probs.argmax(axis=1) == labels).astype(float), probs.max(axis=1), n_bins)


def ece_from_bins(bins: dict[str, list]) -> float:
    """ECE = sum over bins of (bin share) * |observed rate - mean predicted|."""
    count = np.asarray(bins["count"], dtype=float)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.asarray(bins["accuracy"], dtype=float) - np.asarray(bins["confidence"], dtype=float))
    return float(np.sum(np.where(count > 0, count / count.sum() * np.nan_to_num(gap), 0.0)))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    return ece_from_bins(reliability_bins(probs, labels, n_bins))


def binary_reliability(truth: np.ndarray, score: np.ndarray, n_bins: int = 10) -> dict[str, list]:
    """Reliability of a risk: per equal-width risk bin, mean predicted risk, observed rate, count."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(score, edges[1:-1]), 0, n_bins - 1)
    out: dict[str, list] = {"edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    for b in range(n_bins):
        in_bin = bins == b
        out["count"].append(int(in_bin.sum()))
        out["confidence"].append(float(score[in_bin].mean()) if in_bin.any() else float("nan"))
        out["accuracy"].append(float(truth[in_bin].mean()) if in_bin.any() else float("nan"))
    return out
