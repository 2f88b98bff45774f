"""Metrics on the lesion-grouped test split: `python -m core.evaluate --bundle weights/fusion-lite0`.

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
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.bundle import load_bundle, write_card
from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SEED, SPLITS_DIR, WEIGHTS_DIR
from core.data import LesionDataset, prepare, subset
from core.metadata import MetadataEncoder
from core.models import FusionNet
from core.transforms import eval_transform

log = logging.getLogger(__name__)


# -- model outputs ------------------------------------------------------------------------
@torch.no_grad()
def extract(model: FusionNet, dataset: LesionDataset, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Image features, metadata vectors and labels for a dataset (images pass the backbone once)."""
    model.eval()
    feats, metas, labels = [], [], []
    for image, meta, label in tqdm(DataLoader(dataset, batch_size=batch_size), desc="features", leave=False):
        feats.append(model.forward_features(image))
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


# -- calibration --------------------------------------------------------------------------
def fit_temperature(logits: torch.Tensor, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar T minimising validation NLL."""
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


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


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


def bootstrap_auc(
    truth: np.ndarray, score: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = SEED
) -> tuple[float, float, float]:
    """AUROC with a 95% percentile interval, resampling whole lesions (images of one lesion are not independent)."""
    auc = float(roc_auc_score(truth, score))
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    stats = []
    for _ in range(n_boot):
        pick = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        if 0 < truth[pick].sum() < len(pick):
            stats.append(roc_auc_score(truth[pick], score[pick]))
    lo, hi = np.percentile(stats, [2.5, 97.5]) if stats else (float("nan"), float("nan"))
    return auc, float(lo), float(hi)


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
    pred = probs.argmax(axis=1)
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
        out[task] = {
            "auroc": auc, "auroc_ci95": [lo, hi], "threshold": threshold,
            "sensitivity": sens, "specificity": spec, "positives": int(truth.sum()),
        }
    return out


def evaluate_model(
    model: FusionNet,
    card: dict[str, Any],
    dataset_known: LesionDataset,
    dataset_unknown: LesionDataset | None,
    groups: np.ndarray,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Test metrics with metadata, with metadata withheld, and calibration before/after T."""
    feats, meta, labels = extract(model, dataset_known)
    temperature = card["temperature"]
    logits = head_logits(model, feats, meta if model.meta is not None else None)
    probs = torch.softmax(logits / temperature, 1).numpy()
    result = {
        "with_metadata": compute_metrics(probs, labels, groups, card, n_boot),
        "calibration": {
            "temperature": temperature,
            "ece_before": expected_calibration_error(torch.softmax(logits, 1).numpy(), labels),
            "ece_after": expected_calibration_error(probs, labels),
        },
    }
    if model.meta is not None and dataset_unknown is not None:
        unknown = torch.as_tensor(np.repeat(dataset_unknown.encoder.unknown()[None], len(labels), 0))
        probs_u = torch.softmax(head_logits(model, feats, unknown) / temperature, 1).numpy()
        result["metadata_withheld"] = compute_metrics(probs_u, labels, groups, card, n_boot)
    return result


def summary_lines(metrics: dict[str, Any]) -> list[str]:
    """A short human-readable report."""
    lines = []
    for view in ("with_metadata", "metadata_withheld"):
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
    lines.append(f"[calibration] T={cal['temperature']:.3f}  ECE before={cal['ece_before']:.4f} after={cal['ece_after']:.4f}")
    return lines


def datasets_for(card: dict[str, Any], frame: pd.DataFrame, images: list[np.ndarray]) -> tuple[LesionDataset, LesionDataset]:
    """Eval datasets built from the card's preprocessing: metadata given, and all withheld."""
    encoder = MetadataEncoder.from_dict(card["metadata"])
    spec = card["input"]
    transform = eval_transform(spec["size"], spec["mean"], spec["std"])
    return (
        LesionDataset(frame, images, encoder, transform),
        LesionDataset(frame, images, encoder, transform, meta_dropout=1.0),
    )


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

    model, card = load_bundle(args.bundle)
    frame, images, _ = prepare(args.data, args.split_file, card["training"]["seed"])
    frame, images = subset(frame, images, frame["split"] == args.split)
    known, unknown = datasets_for(card, frame, images)
    metrics = evaluate_model(model, card, known, unknown, frame["group_id"].to_numpy(), args.bootstrap)
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
