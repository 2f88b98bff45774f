"""Metrics on the lesion-grouped test split: `python -m core.model.evaluate --bundle weights/fusion-lite0`.

Accuracy, balanced accuracy (mean per-class recall, the ISIC metric), per-class precision /
recall / F1, malignant-vs-benign and melanoma-vs-rest sensitivity, specificity and AUROC with
lesion-level bootstrap 95% intervals, macro AUROC, the confusion matrix, and expected
calibration error before and after temperature scaling. Reported with the metadata given and
with all metadata withheld.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SEED, SPLITS_DIR, WEIGHTS_DIR
from core.data.datasets import LesionDataset, prepare_for_card, subset
from core.data.metadata import MetadataEncoder
from core.data.transforms import card_transform
from core.errors import InputError
from core.model.bundle import load_bundle, write_card
from core.model.calibration import (
    Calibration,
    balanced_accuracy,
    binary_reliability,
    ece_from_bins,
    reliability_bins,
)
from core.model.networks import FusionNet, image_features

log = logging.getLogger(__name__)


# -- model outputs ------------------------------------------------------------------------
@torch.no_grad()
def extract(model: FusionNet, dataset: LesionDataset, flip_average: bool = False,
            batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Image features, metadata vectors and labels for a dataset (images pass the backbone once;
    with `flip_average`, the image and its mirror image in one batched pass, features averaged)."""
    model.eval()
    feats, metas, labels = [], [], []
    for image, meta, label in tqdm(DataLoader(dataset, batch_size=batch_size), desc="features", leave=False):
        feats.append(image_features(model, image, flip_average))
        metas.append(meta)
        labels.append(label)
    return torch.cat(feats), torch.cat(metas), torch.cat(labels).numpy()


@torch.no_grad()
def head_logits(model: FusionNet, features: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
    """Logits from cached image features; `meta=None` on a fusion model means all metadata withheld."""
    model.eval()
    if model.meta is not None and meta is None:
        raise ValueError("pass the unknown-metadata vectors explicitly")
    embedding = model.forward_meta(meta, features.shape[0]) if model.meta is not None else None
    return model.forward_head(features, embedding)


# -- binary views -------------------------------------------------------------------------
def class_indices(card: dict[str, Any], names: list[str]) -> list[int]:
    return [card["classes"].index(n) for n in names]


def binary_scores(probs: np.ndarray, labels: np.ndarray, idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(truth, score) for 'any of these classes' vs the rest."""
    return np.isin(labels, idx).astype(int), probs[:, idx].sum(axis=1)


def threshold_for_sensitivity(truth: np.ndarray, score: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) reaches `target`."""
    positives = np.sort(score[truth == 1])[::-1]
    if len(positives) == 0:
        return 0.5
    k = int(np.ceil(target * len(positives))) - 1
    return float(positives[min(max(k, 0), len(positives) - 1)])


def sens_spec(truth: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    pred = score >= threshold
    pos, neg = truth == 1, truth == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float | None], groups: np.ndarray, n_boot: int = 1000, seed: int = SEED
) -> tuple[float, float]:
    """95% percentile interval of `statistic(row_indices)`, resampling whole lesions.

    Images of one lesion are not independent, so the lesion is the unit of resampling. A
    statistic may return None for a resample where it is undefined (e.g. no positives); those
    resamples are skipped.
    """
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    stats = []
    for _ in range(n_boot):
        value = statistic(np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))]))
        if value is not None:
            stats.append(value)
    lo, hi = np.percentile(stats, [2.5, 97.5]) if stats else (float("nan"), float("nan"))
    return float(lo), float(hi)


def bootstrap_auc(
    truth: np.ndarray, score: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = SEED
) -> tuple[float, float, float]:
    """AUROC with a 95% percentile interval, resampling whole lesions (images of one lesion are not independent)."""
    auc = float(roc_auc_score(truth, score))

    def stat(pick: np.ndarray) -> float | None:
        return roc_auc_score(truth[pick], score[pick]) if 0 < truth[pick].sum() < len(pick) else None

    lo, hi = bootstrap_ci(stat, groups, n_boot, seed)
    return auc, lo, hi


def sensitivity_at_specificity(truth: np.ndarray, score: np.ndarray, specificity: float) -> tuple[float, float]:
    """(sensitivity, threshold) of the best operating point whose specificity is at least `specificity`."""
    if not 0 < truth.sum() < len(truth):
        return float("nan"), float("nan")
    fpr, tpr, thr = roc_curve(truth, score)
    ok = np.flatnonzero(fpr <= 1.0 - specificity + 1e-12)
    best = ok[np.argmax(tpr[ok])]
    return float(tpr[best]), float(min(thr[best], 1.0))


# -- the report ---------------------------------------------------------------------------
def compute_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    card: dict[str, Any],
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Every test metric from calibrated probabilities; thresholds come from the card."""
    classes = card["classes"]
    pred = Calibration.from_card(card).suggest(probs)
    present = sorted(set(labels))
    prec, rec, f1, support = precision_recall_fscore_support(
        labels, pred, labels=list(range(len(classes))), zero_division=0
    )
    per_class = {}
    for i, name in enumerate(classes):
        truth = (labels == i).astype(int)
        auc = float(roc_auc_score(truth, probs[:, i])) if 0 < truth.sum() < len(truth) else float("nan")
        per_class[name] = {
            "precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
            "support": int(support[i]), "auroc": auc,
        }
    out: dict[str, Any] = {
        "n_images": int(len(labels)),
        "n_lesions": int(len(np.unique(groups))),
        "accuracy": float(accuracy_score(labels, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)),
        "macro_auroc": float(np.nanmean([per_class[classes[i]]["auroc"] for i in present])),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(len(classes)))).tolist(),
    }
    for task, names in (("malignant", card["malignant"]), ("melanoma", [card["melanoma"]])):
        truth, score = binary_scores(probs, labels, class_indices(card, names))
        threshold = card["referral_thresholds"][task]["threshold"]
        sens, spec = sens_spec(truth, score, threshold)
        auc, lo, hi = bootstrap_auc(truth, score, groups, n_boot) if 0 < truth.sum() < len(truth) else (float("nan"),) * 3
        referred = score >= threshold
        nevi = labels == classes.index("nv") if "nv" in classes else np.zeros(len(labels), bool)
        out[task] = {
            "auroc": auc, "auroc_ci95": [lo, hi], "threshold": threshold,
            "sensitivity": sens, "specificity": spec, "positives": int(truth.sum()),
            "referred_fraction": float(referred.mean()),
            "ppv": float(truth[referred].mean()) if referred.any() else float("nan"),
            "nevi_referred_fraction": float(referred[nevi].mean()) if nevi.any() else float("nan"),
        }
    return out


# -- aggregates for the performance page ---------------------------------------------------
#: Target sensitivities of the operating-point table (the page's slider snaps to these).
SENSITIVITY_GRID: tuple[float, ...] = tuple(np.round(np.arange(0.50, 1.0001, 0.01), 2))
AGE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<30", 0, 30), ("30-44", 30, 45), ("45-59", 45, 60), ("60-74", 60, 75), ("75+", 75, 200),
)


def _thin(n: int, n_points: int) -> np.ndarray:
    """Indices of at most `n_points` roughly evenly spaced points, always keeping both ends."""
    if n <= n_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, n_points)).astype(int))


def binary_curves(truth: np.ndarray, score: np.ndarray, n_points: int = 300) -> dict[str, Any] | None:
    """ROC and precision-recall curves, thinned to a few hundred points so a card stays small.

    None when the task has no positives or no negatives (a curve is undefined).
    """
    if not 0 < truth.sum() < len(truth):
        return None
    fpr, tpr, roc_thr = roc_curve(truth, score)
    precision, recall, pr_thr = precision_recall_curve(truth, score)
    keep_roc, keep_pr = _thin(len(fpr), n_points), _thin(len(recall), n_points)
    # sklearn's first ROC threshold is +inf and the PR curve's last point has no threshold.
    pr_thr = np.append(pr_thr, np.nan)
    return {
        "roc": {"fpr": fpr[keep_roc].round(5).tolist(), "tpr": tpr[keep_roc].round(5).tolist(),
                "threshold": np.minimum(roc_thr[keep_roc], 1.0).round(6).tolist()},
        "pr": {"recall": recall[keep_pr].round(5).tolist(), "precision": precision[keep_pr].round(5).tolist(),
               "threshold": pr_thr[keep_pr].round(6).tolist()},
        "auroc": float(roc_auc_score(truth, score)),
        "average_precision": float(average_precision_score(truth, score)),
        "prevalence": float(truth.mean()),
        "positives": int(truth.sum()),
        "n": int(len(truth)),
    }


def operating_points(truth: np.ndarray, score: np.ndarray, targets: tuple[float, ...] = SENSITIVITY_GRID) -> list[dict[str, float]]:
    """For each target sensitivity: the threshold reaching it and the sensitivity/specificity it gives.

    The threshold is chosen on the same data it is measured on, so these rows describe the
    trade-off on this split; a threshold for use must come from validation data (the card's).
    """
    rows = []
    for target in targets:
        threshold = threshold_for_sensitivity(truth, score, target)
        sens, spec = sens_spec(truth, score, threshold)
        rows.append({"target_sensitivity": float(target), "threshold": threshold,
                     "sensitivity": sens, "specificity": spec,
                     "referred_fraction": float((score >= threshold).mean()) if len(score) else float("nan")})
    return rows


def age_band(age: pd.Series) -> pd.Series:
    """Age in years -> band label; missing ages -> "unknown"."""
    out = pd.Series("unknown", index=age.index, dtype=object)
    for label, low, high in AGE_BANDS:
        out[(age >= low) & (age < high)] = label
    return out


def subgroup_metrics(probs: np.ndarray, labels: np.ndarray, frame: pd.DataFrame, card: dict[str, Any],
                     n_boot: int = 1000) -> list[dict[str, Any]]:
    """Main metrics by sex, age band, body site and diagnosis-confirmation type, with counts and
    lesion-bootstrap 95% intervals (`<metric>_ci95`).

    Aggregates only: one row per subgroup, never per image. Metrics that a subgroup cannot
    define (AUROC without positives or negatives) are NaN, not hidden, so a clinician sees why.
    """
    columns = {
        "sex": frame["sex"].astype(str),
        "age band": age_band(frame["age"].where(~frame["age_missing"].astype(bool))),
        "body site": frame["site"].astype(str),
        "diagnosis confirmation": frame["dx_type"].astype(str),
    }
    pred = Calibration.from_card(card).suggest(probs)
    mal_truth, mal_score = binary_scores(probs, labels, class_indices(card, card["malignant"]))
    mel_truth, mel_score = binary_scores(probs, labels, class_indices(card, [card["melanoma"]]))
    threshold = card.get("referral_thresholds", {}).get("malignant", {}).get("threshold", 0.5)
    groups = frame["group_id"].to_numpy()
    rows = []
    for variable, values in columns.items():
        for value in sorted(values.unique(), key=str):
            idx = np.flatnonzero((values == value).to_numpy())
            statistics: dict[str, Callable[[np.ndarray], float]] = {
                "accuracy": lambda p: float(np.mean(pred[p] == labels[p])),
                "balanced_accuracy": lambda p: balanced_accuracy(labels[p], pred[p]),
                "malignant_auroc": lambda p: _auc(mal_truth[p], mal_score[p]),
                "melanoma_auroc": lambda p: _auc(mel_truth[p], mel_score[p]),
                "malignant_sensitivity": lambda p: sens_spec(mal_truth[p], mal_score[p], threshold)[0],
                "malignant_specificity": lambda p: sens_spec(mal_truth[p], mal_score[p], threshold)[1],
            }
            row: dict[str, Any] = {
                "variable": variable, "group": str(value), "n_images": int(len(idx)),
                "n_lesions": int(len(np.unique(groups[idx]))),
                "malignant": int(mal_truth[idx].sum()), "melanoma": int(mel_truth[idx].sum()),
            }
            for name, statistic in statistics.items():
                row[name] = statistic(idx)
                if n_boot and not np.isnan(row[name]):
                    def within(pick: np.ndarray, statistic: Callable[[np.ndarray], float] = statistic) -> float | None:
                        value = statistic(idx[pick])
                        return None if np.isnan(value) else value

                    row[f"{name}_ci95"] = list(bootstrap_ci(within, groups[idx], n_boot))
                else:
                    row[f"{name}_ci95"] = [float("nan"), float("nan")]
            rows.append(row)
    return rows


def _auc(truth: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(truth, score)) if 0 < truth.sum() < len(truth) else float("nan")


def flip_average(card: dict[str, Any]) -> bool:
    """Whether the card's model averages the image and its mirror image at prediction time."""
    return bool(card["input"].get("flip_average", False))


def reliability(logits: torch.Tensor, labels: np.ndarray, card: dict[str, Any]) -> dict[str, Any]:
    """Reliability bins of the top class, the malignant risk and the melanoma risk, before
    (plain softmax of the logits) and after the card's calibration."""
    after = Calibration.from_card(card).probs(logits)
    before = torch.softmax(logits, 1).numpy()
    out: dict[str, Any] = {"top": {"before": reliability_bins(before, labels), "after": reliability_bins(after, labels)}}
    for task, names in (("malignant", card["malignant"]), ("melanoma", [card["melanoma"]])):
        idx = class_indices(card, names)
        out[task] = {when: binary_reliability(*binary_scores(p, labels, idx)) for when, p in
                     (("before", before), ("after", after))}
    return out


def performance_aggregates(
    logits: torch.Tensor,
    labels: np.ndarray,
    groups: np.ndarray,
    card: dict[str, Any],
    frame: pd.DataFrame | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Everything the performance page plots, as aggregates (curves, bins, tables), not rows.

    Stored in the card so the page needs no dataset: ROC/PR curves and the operating-point
    table for malignant and melanoma, reliability bins of the top class, the malignant risk and
    the melanoma risk before and after calibration, bootstrap intervals for accuracy, balanced
    accuracy and each class's AUROC, and, given the test frame, subgroup metrics.
    """
    calib = Calibration.from_card(card)
    probs = calib.probs(logits)
    pred = calib.suggest(probs)
    out: dict[str, Any] = {"curves": {}, "operating_points": {}, "sensitivity_at_80_specificity": {}}
    for task, names in (("malignant", card["malignant"]), ("melanoma", [card["melanoma"]])):
        truth, score = binary_scores(probs, labels, class_indices(card, names))
        out["curves"][task] = binary_curves(truth, score)
        out["operating_points"][task] = operating_points(truth, score) if 0 < truth.sum() else []
        sens80, thr80 = sensitivity_at_specificity(truth, score, 0.80)
        out["sensitivity_at_80_specificity"][task] = {"sensitivity": sens80, "threshold": thr80}
    out["reliability"] = reliability(logits, labels, card)
    out["ci95"] = {
        "accuracy": bootstrap_ci(lambda p: float(np.mean(pred[p] == labels[p])), groups, n_boot),
        "balanced_accuracy": bootstrap_ci(lambda p: balanced_accuracy(labels[p], pred[p]), groups, n_boot),
        "per_class_auroc": {},
    }
    for i, name in enumerate(card["classes"]):
        truth = (labels == i).astype(int)
        if 0 < truth.sum() < len(truth):
            out["ci95"]["per_class_auroc"][name] = list(bootstrap_auc(truth, probs[:, i], groups, n_boot)[1:])
    if frame is not None:
        if len(frame) != len(labels):
            raise ValueError(f"The test frame has {len(frame)} rows for {len(labels)} predictions.")
        out["subgroups"] = subgroup_metrics(probs, labels, frame.reset_index(drop=True), card, n_boot)
    return out


def split_logits(model: FusionNet, card: dict[str, Any], dataset: LesionDataset) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Logits for every image of a split, as the Predictor computes them (flip averaging as the card
    says): "all_inputs", and for a fusion model "metadata_withheld" (the head re-run on the same
    cached image features with every field unknown). Returns (views, labels)."""
    feats, meta, labels = extract(model, dataset, flip_average(card))
    views = {"all_inputs": head_logits(model, feats, meta if model.meta is not None else None)}
    if model.meta is not None:
        unknown = torch.as_tensor(np.repeat(dataset.encoder.unknown()[None], len(labels), 0))
        views["metadata_withheld"] = head_logits(model, feats, unknown)
    return views, labels


def centre_square(image: np.ndarray) -> np.ndarray:
    """The central square of an image, its side the shorter side (150x150 of a 200x150 image): what
    a user's square crop around the lesion looks like. The card's transform then fits it to the
    model's input (padded for cards with input.fit "pad")."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def evaluate_model(
    model: FusionNet,
    card: dict[str, Any],
    dataset: LesionDataset,
    frame: pd.DataFrame,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Test metrics on all the model's inputs (the image, plus the metadata for a fusion model) and
    with all metadata withheld (fusion only), on centre crops of the same images ("centre_crop",
    see `centre_square`; all inputs), calibration of the top class and of both risks before and
    after the card's calibration, and the page's aggregates. `frame` is row-aligned with `dataset`:
    its lesion ids drive the bootstrap, its columns the subgroups."""
    groups = frame["group_id"].to_numpy()
    views, labels = split_logits(model, card, dataset)
    calib = Calibration.from_card(card)
    logits = views["all_inputs"]
    probs = calib.probs(logits)
    bins = reliability(logits, labels, card)
    result = {
        "calibration": {
            **{k: v for k, v in calib.to_card().items() if k in ("temperature", "alpha")},
            **{f"ece_{risk}_{when}": ece_from_bins(bins[risk][when])
               for risk in ("top", "malignant", "melanoma") for when in ("before", "after")},
            "mean_malignant_risk": float(binary_scores(probs, labels, class_indices(card, card["malignant"]))[1].mean()),
            "malignant_prevalence": float(np.isin(labels, class_indices(card, card["malignant"])).mean()),
        },
        "aggregates": performance_aggregates(logits, labels, groups, card, frame, n_boot),
    }
    crops = eval_dataset(card, frame, [centre_square(image) for image in dataset.images])
    views["centre_crop"] = split_logits(model, card, crops)[0]["all_inputs"]
    for view, view_logits in views.items():
        result[view] = compute_metrics(calib.probs(view_logits), labels, groups, card, n_boot)
    return result


def paired_difference(
    statistic_a: Callable[[np.ndarray], float], statistic_b: Callable[[np.ndarray], float], groups: np.ndarray,
    n_boot: int = 1000, seed: int = SEED,
) -> tuple[float, float, float]:
    """statistic_a - statistic_b on the same images, with a paired lesion-bootstrap 95% interval:
    both are re-scored on each resample of lesions, so the interval is of the difference itself.
    Each statistic scores one model's outputs on the given row indices."""
    every = np.arange(len(groups))
    diff = statistic_a(every) - statistic_b(every)

    def resample(pick: np.ndarray) -> float | None:
        left, right = statistic_a(pick), statistic_b(pick)
        return None if np.isnan(left) or np.isnan(right) else left - right

    lo, hi = bootstrap_ci(resample, groups, n_boot, seed)
    return float(diff), lo, hi


def deployed_scorers(card: dict[str, Any], labels: np.ndarray) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """metric -> statistic(rows, probs) as the card deploys the model (the suggested-class rule for
    balanced accuracy), in the form `paired_difference` resamples: balanced accuracy, melanoma and
    malignant AUROC (nan on a resample that lacks one side)."""
    calib = Calibration.from_card(card)

    def auc(idx: list[int]) -> Callable[[np.ndarray, np.ndarray], float]:
        def score(rows: np.ndarray, probs: np.ndarray) -> float:
            truth, s = binary_scores(probs[rows], labels[rows], idx)
            return float(roc_auc_score(truth, s)) if 0 < truth.sum() < len(truth) else float("nan")
        return score

    return {
        "balanced_accuracy": lambda rows, probs: balanced_accuracy(labels[rows], calib.suggest(probs[rows])),
        "melanoma_auroc": auc(class_indices(card, [card["melanoma"]])),
        "malignant_auroc": auc(class_indices(card, card["malignant"])),
    }


#: Trainings (seeds) each side needs before a difference between separately trained models is claimed.
MIN_TRAININGS = 3


def difference_verdict(low: float, high: float, trainings: int | None = None) -> str:
    """How a difference with this 95% interval may be worded: a tie when the interval holds 0.

    `trainings`: for models trained separately, the fewest trainings (seeds) behind either side. The
    lesion bootstrap leaves out run-to-run variance, so under MIN_TRAININGS an interval clear of 0 is
    "unconfirmed", never better or worse. None: one model against itself (metadata given vs withheld),
    where no training differs."""
    if low <= 0 <= high:
        return "tie"
    if trainings is not None and trainings < MIN_TRAININGS:
        return "unconfirmed"
    return "better" if low > 0 else "worse"


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A short human-readable report."""
    lines = []
    for view in ("all_inputs", "metadata_withheld", "centre_crop"):
        if view not in metrics:
            continue
        m = metrics[view]
        lines.append(
            f"[{view}] n={m['n_images']} images / {m['n_lesions']} lesions  accuracy={m['accuracy']:.3f}  "
            f"balanced_accuracy={m['balanced_accuracy']:.3f}  macro_AUROC={m['macro_auroc']:.3f}"
        )
        for task in ("malignant", "melanoma"):
            t = m[task]
            lines.append(
                f"    {task:9s} AUROC={t['auroc']:.3f} (95% CI {t['auroc_ci95'][0]:.3f}-{t['auroc_ci95'][1]:.3f})  "
                f"sensitivity={t['sensitivity']:.3f} specificity={t['specificity']:.3f} at threshold {t['threshold']:.3f}"
            )
        for name, c in m["per_class"].items():
            lines.append(
                f"    {name:6s} precision={c['precision']:.3f} recall={c['recall']:.3f} f1={c['f1']:.3f} "
                f"support={c['support']} AUROC={c['auroc']:.3f}"
            )
    cal = metrics["calibration"]
    lines.append(f"[calibration] T={cal['temperature']:.3f}  alpha={cal['alpha']:.2f}  expected calibration error "
                 + "  ".join(f"{risk} {cal[f'ece_{risk}_before']:.3f}->{cal[f'ece_{risk}_after']:.3f}"
                             for risk in ("top", "malignant", "melanoma"))
                 + f"  mean malignant risk {cal['mean_malignant_risk']:.3f} (prevalence {cal['malignant_prevalence']:.3f})")
    return lines


def eval_dataset(card: dict[str, Any], frame: pd.DataFrame, images: list[np.ndarray]) -> LesionDataset:
    """The evaluation dataset, preprocessed exactly as the card says (metadata as recorded)."""
    encoder = MetadataEncoder.from_dict(card["metadata"])
    return LesionDataset(frame, images, encoder, card_transform(card))


def load_for_scoring(bundle: Path, data: Path, split_file: Path) -> tuple[FusionNet, dict[str, Any], pd.DataFrame, list[np.ndarray]]:
    """A bundle and the dataset on the split it was trained with (InputError if either is wrong)."""
    model, card = load_bundle(bundle)
    frame, images, _ = prepare_for_card(card, data, split_file)
    return model, card, frame, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--write-card", action="store_true", help="store the metrics in the bundle's model card")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.write_card and args.split != "test":
        parser.error("--write-card stores test metrics; it cannot be combined with --split " + args.split)
    try:
        model, card, frame, images = load_for_scoring(args.bundle, args.data, args.split_file)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    frame, images = subset(frame, images, frame["split"] == args.split)
    metrics = evaluate_model(model, card, eval_dataset(card, frame, images), frame, args.bootstrap)
    metrics["split"] = args.split
    print(f"{card['name']} on the lesion-grouped {args.split} split:")
    print("\n".join(summary_lines(metrics)))
    if args.json:
        args.json.write_text(json.dumps(metrics, indent=1))
    if args.write_card:
        card["metrics"] = metrics
        write_card(card, args.bundle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
