"""The papers' model comparison on the shared lesion-grouped split.

    python bench/compare_models.py                      (the full study; resumable)
    python bench/compare_models.py --limit 64 --max-steps 2 --epochs 1 --folds 2 \
        --out /tmp/cmp/comparison.json --work-dir /tmp/cmp --cache-dir /tmp/cmp/cache    (smoke run)

Rows: (1) the first paper's multimodal CNN (papercnn, image + metadata, 128x128); (2) the same
on heatmap-guided input (Grad-CAM of an ImageNet-pretrained EfficientNet-Lite0, see
core/explain/guided.py); (3) the default backbone image-only and (4) the default fusion model, both
reused from their committed bundles; (5) the default fusion model's own recipe (read from its card)
on heatmap-guided input, trained only if (2) shows promise on the validation split (or with
--force-lite0-heatmap); (6) ResNet-50 and Inception-v3, trained only with --with-heavy and their
ImageNet weights in the torch hub cache. Every model sees one geometry in training and evaluation
(core.data.transforms.fit_to_input: the paper CNN's square input gets the 4:3 image padded, in both).

Each row reports accuracy, balanced accuracy, melanoma AUROC and malignant sensitivity at 80%
specificity on the test split, with lesion-bootstrap 95% intervals, training time (sum of the
epoch times in the bundle's history) and inference time per image on --threads cores. Every
evaluated row is also compared with row 4, the app's default, paired: both scored on the same
resampled test lesions (core.model.evaluate.paired_difference), the interval on the difference. Models in
--cv-models also get lesion-grouped k-fold cross-validation over all images (mean +- sd).

--trainings N trains each trainable row N times (seeds --seed, --seed+1, ...; a reused bundle counts
as the first, the others repeat its recorded recipe) and compares rows on the statistic averaged over
their trainings: a difference between separately trained models is claimed (better / worse) only with
3 trainings of each (core.model.evaluate.MIN_TRAININGS); with fewer it is "unconfirmed".

Resumable: a row or fold whose bundle exists is not retrained, training resumes from its
checkpoint, and the results file is rewritten after every row and fold.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.data.datasets import LesionDataset, load_ham10000, prepare, subset  # noqa: E402
from core.figures.performance import comparison_table  # noqa: E402
from core.model.bundle import CARD_FILE, load_bundle  # noqa: E402
from core.model.calibration import Calibration, balanced_accuracy  # noqa: E402
from core.model.evaluate import (  # noqa: E402
    binary_scores,
    bootstrap_auc,
    bootstrap_ci,
    class_indices,
    deployed_scorers,
    difference_verdict,
    eval_dataset,
    extract,
    flip_average,
    head_logits,
    paired_difference,
    sensitivity_at_specificity,
)
from core.model.networks import FusionNet  # noqa: E402

log = logging.getLogger("compare_models")

PAPERCNN_ARGS = ["--backbone", "papercnn", "--epochs", "15", "--patience", "5", "--lr", "1e-3", "--batch-size", "32"]
#: The training arguments row 5 copies from the default bundle's card, so that row 4 and row 5
#: differ only in the heatmap guidance.
RECIPE_KEYS = ("backbone", "freeze_stages", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "schedule",
               "warmup_epochs", "class_weights", "label_smoothing", "patience", "meta_dropout")
HEAVY_ARGS = ["--freeze-stages", "3", "--epochs", "12", "--optimizer", "adamw", "--lr", "3e-4", "--weight-decay", "0.01"]
#: Forward-pass cost relative to EfficientNet-Lite0 at 150x200 (about 0.24 GFLOPs): for the estimates.
RELATIVE_COST = {"resnet50": 4.1 / 0.24, "inception_v3": 5.7 / 0.24}


@dataclass
class Row:
    id: str
    label: str
    train_args: list[str] = field(default_factory=list)
    guided: bool = False
    reuse: str | None = None  # a committed bundle under weights/ (evaluated, not retrained)
    heavy: str | None = None  # a torchvision backbone that needs its ImageNet weights cached
    recipe_of: str | None = None  # train with this committed bundle's recorded arguments


#: The row every other row is compared with, paired.
REFERENCE = "lite0-fusion"


def recipe_args(card: dict[str, Any]) -> list[str]:
    """The training arguments of a bundle, from its card, as core.model.train options."""
    training = card["training"]
    missing = [k for k in RECIPE_KEYS if k not in training]
    if missing:
        raise ValueError(f"The card records no {', '.join(missing)}: its recipe cannot be repeated.")
    return ([part for key in RECIPE_KEYS for part in (f"--{key.replace('_', '-')}", str(training[key]))]
            + (["--no-metadata"] if training.get("no_metadata") else []))


def row_train_args(row: Row, weights_dir: Path) -> list[str]:
    """How a row is trained: its own arguments, or a committed bundle's recorded recipe (row 5 copies the
    default's; a reused row's further trainings repeat its own)."""
    source = row.recipe_of or row.reuse
    if source is None:
        return row.train_args
    return recipe_args(json.loads((weights_dir / source / CARD_FILE).read_text()))


def bundle_dir(args: argparse.Namespace, row: Row, seed: int) -> Path:
    """Where a row's training with `seed` is: the committed bundle for a reused row's first training."""
    if seed == args.seed and row.reuse:
        return args.weights_dir / row.reuse
    return args.work_dir / "bundles" / _training_name(args, row, seed)


def _training_name(args: argparse.Namespace, row: Row, seed: int) -> str:
    return row.id if seed == args.seed else f"{row.id}-seed{seed}"


def row_seeds(args: argparse.Namespace, row: Row) -> list[int]:
    """The seeds of a row's trainings (one for a heavy row)."""
    return [args.seed] if row.heavy else [args.seed + k for k in range(args.trainings)]


ROWS = [
    Row("papercnn-fusion", "First paper's multimodal CNN (papercnn, image + metadata, 128x128)", PAPERCNN_ARGS),
    Row("papercnn-heatmap-fusion", "First paper's CNN on heatmap-guided input (Grad-CAM of ImageNet Lite0) + metadata",
        PAPERCNN_ARGS, guided=True),
    Row("lite0-image", "EfficientNet-Lite0, image only (default backbone)", reuse="image-lite0"),
    Row("lite0-fusion", "EfficientNet-Lite0 + metadata (the app's default model)", reuse="fusion-lite0"),
    Row("lite0-heatmap-fusion", "EfficientNet-Lite0 + metadata on heatmap-guided input (the default's recipe)",
        guided=True, recipe_of="fusion-lite0"),
    Row("resnet50-fusion", "ResNet-50 + metadata (first paper's comparison)", ["--backbone", "resnet50", *HEAVY_ARGS],
        heavy="resnet50"),
    Row("inception_v3-fusion", "Inception-v3 + metadata (first paper's comparison)",
        ["--backbone", "inception_v3", *HEAVY_ARGS], heavy="inception_v3"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=config.REPO_ROOT / "results" / "comparison.json")
    p.add_argument("--work-dir", type=Path, default=config.REPO_ROOT / "runs" / "compare")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "dermoscopy",
                   help="heatmaps and the guided image copy (derived from CC BY-NC data: kept out of the repo)")
    p.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000")
    p.add_argument("--split-file", type=Path, default=config.SPLITS_DIR / "ham10000.csv")
    p.add_argument("--weights-dir", type=Path, default=config.WEIGHTS_DIR, help="where the reused bundles are")
    p.add_argument("--rows", nargs="*", help="only these row ids")
    p.add_argument("--cv-models", nargs="*", default=["papercnn-fusion", "papercnn-heatmap-fusion"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--guide-mode", default="weight", choices=["weight", "replace"])
    p.add_argument("--force-lite0-heatmap", action="store_true", help="train row 5 even if row 2 shows no promise")
    p.add_argument("--with-heavy", action="store_true", help="train ResNet-50 / Inception-v3 if their weights are cached")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--re-evaluate", action="store_true",
                   help="evaluate finished rows again (never retrains): every row's timing from this one run")
    p.add_argument("--train-only", action="store_true",
                   help="only train the rows' bundles (no evaluation, results file untouched): for running "
                        "trainings side by side at --threads 1, then evaluating them in one run on 2 threads")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--trainings", type=int, default=1,
                   help="trainings per row (seeds --seed, --seed+1, ...); a claim between rows needs 3 of each")
    # smoke-test knobs, passed on to core.model.train
    p.add_argument("--limit", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--epochs", type=int)
    return p.parse_args(argv)


# -- results file -----------------------------------------------------------------------------
def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    return {"rows": []}


def save_results(results: dict[str, Any], path: Path) -> None:
    """Rewrite the JSON (atomically) and a flat CSV next to it, after every finished piece."""
    path.parent.mkdir(parents=True, exist_ok=True)
    results["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)
    comparison_table(results).to_csv(path.with_suffix(".csv"), index=False)


def without_figures(entry: dict[str, Any], status: str, note: str) -> None:
    """A row that has no figures in this study: any from an earlier run of it are dropped with them."""
    kept = {k: entry[k] for k in ("id", "label")}
    entry.clear()
    entry.update(kept, status=status, note=note)


def row_entry(results: dict[str, Any], row: Row) -> dict[str, Any]:
    for entry in results["rows"]:
        if entry["id"] == row.id:
            entry["label"] = row.label
            return entry
    entry = {"id": row.id, "label": row.label, "status": "pending"}
    results["rows"].append(entry)
    results["rows"].sort(key=lambda e: [r.id for r in ROWS].index(e["id"]))
    return entry


# -- data -------------------------------------------------------------------------------------------
class Data:
    """Decoded datasets (original and guided), loaded once each and only when needed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._cache: dict[str, tuple[pd.DataFrame, list[np.ndarray]]] = {}

    def get(self, guided: bool) -> tuple[pd.DataFrame, list[np.ndarray]]:
        """Frame with the shared split and decoded images; with --limit, the same stratified sample
        core.model.train draws, chosen before decoding so a smoke run reads only those images."""
        key = "guided" if guided else "original"
        if key not in self._cache:
            root = self.guided_dir() if guided else self.args.data
            frame, images, _ = prepare(root, self.args.split_file, self.args.seed, self.args.limit)
            self._cache[key] = (frame, images)
        return self._cache[key]

    def guided_dir(self) -> Path:
        """The guided copy of the dataset: heatmaps computed once (cached), images written once."""
        from core.explain.guided import guide_cams, imagenet_guide, write_guided_dataset

        out = self.args.cache_dir / f"ham10000-guided-{self.args.guide_mode}"
        frame, images = self.get(False)
        marker = out / f".complete-{len(frame)}"
        if not marker.is_file():
            cams = guide_cams(imagenet_guide(), images, self.args.cache_dir / "guide-cams-imagenet-lite0.npz",
                              frame["image_id"].tolist())
            write_guided_dataset(self.args.data, out, frame, images, cams, self.args.guide_mode)
            marker.touch()
        return out


# -- training -----------------------------------------------------------------------------------------
def train(args: argparse.Namespace, row: Row, data_dir: Path, split_file: Path, out: Path, work: Path,
          seed: int) -> Path:
    """core.model.train in a subprocess (its memory is returned when it ends); skipped if the bundle exists."""
    if (out / CARD_FILE).is_file():
        log.info("%s: bundle exists at %s, not retrained", row.id, out)
        return out
    cmd = [sys.executable, "-m", "core.model.train", "--name", row.id, *row_train_args(row, args.weights_dir),
           "--data", str(data_dir),
           "--split-file", str(split_file), "--out", str(out), "--work-dir", str(work), "--resume",
           "--threads", str(args.threads), "--seed", str(seed),
           "--bootstrap", str(min(args.bootstrap, 200))]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    log.info("%s: training: %s", row.id, " ".join(cmd))
    code = subprocess.run(cmd, cwd=config.REPO_ROOT).returncode
    if code != 0 or not (out / CARD_FILE).is_file():
        raise TrainingFailed(f"core.model.train exited with code {code} (see its log above)")
    return out


class TrainingFailed(RuntimeError):
    """One training run failed; the study records it and goes on with the next row or fold."""


def train_seeds(args: argparse.Namespace, row: Row, data: Data, seeds: list[int]) -> list[Path]:
    """Train (or resume) the row's trainings with these seeds on the shared split; their bundles (a
    reused row's committed bundle is returned as it is)."""
    data_dir = data.guided_dir() if row.guided else args.data
    return [bundle_dir(args, row, seed) if row.reuse and seed == args.seed
            else train(args, row, data_dir, args.split_file, bundle_dir(args, row, seed),
                       args.work_dir / "train" / _training_name(args, row, seed), seed)
            for seed in seeds]


# -- evaluation -------------------------------------------------------------------------------------------
@torch.no_grad()
def test_outputs(
    bundle: Path, frame: pd.DataFrame, images: list[np.ndarray], split: str = "test"
) -> tuple[FusionNet, dict[str, Any], np.ndarray, np.ndarray, np.ndarray, LesionDataset]:
    """Calibrated test probabilities, labels and lesion ids of a bundle on one split."""
    model, card = load_bundle(bundle)
    part, part_images = subset(frame, images, frame["split"] == split)
    known = eval_dataset(card, part, part_images)
    feats, meta, labels = extract(model, known, flip_average(card))
    logits = head_logits(model, feats, meta if model.meta is not None else None)
    probs = Calibration.from_card(card).probs(logits)
    return model, card, probs, labels, part["group_id"].to_numpy(), known


def row_metrics(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, card: dict[str, Any], n_boot: int) -> dict[str, Any]:
    """The table's four metrics, each with a lesion-bootstrap 95% interval (classes by the card's decision rule)."""
    pred = Calibration.from_card(card).suggest(probs)
    mel_t, mel_s = binary_scores(probs, labels, class_indices(card, [card["melanoma"]]))
    mal_t, mal_s = binary_scores(probs, labels, class_indices(card, card["malignant"]))
    out: dict[str, Any] = {"n_images": int(len(labels)), "n_lesions": int(len(np.unique(groups)))}
    out["accuracy"] = float(np.mean(pred == labels))
    out["accuracy_ci95"] = bootstrap_ci(lambda p: float(np.mean(pred[p] == labels[p])), groups, n_boot)
    out["balanced_accuracy"] = balanced_accuracy(labels, pred)
    out["balanced_accuracy_ci95"] = bootstrap_ci(lambda p: balanced_accuracy(labels[p], pred[p]), groups, n_boot)
    if 0 < mel_t.sum() < len(mel_t):
        auc, lo, hi = bootstrap_auc(mel_t, mel_s, groups, n_boot)
        out["melanoma_auroc"], out["melanoma_auroc_ci95"] = auc, [lo, hi]
    else:
        out["melanoma_auroc"], out["melanoma_auroc_ci95"] = float("nan"), None
    out["malignant_sens_at_80_spec"] = sensitivity_at_specificity(mal_t, mal_s, 0.80)[0]

    def sens80(p: np.ndarray) -> float | None:
        return sensitivity_at_specificity(mal_t[p], mal_s[p], 0.80)[0] if 0 < mal_t[p].sum() < len(p) else None

    out["malignant_sens_at_80_spec_ci95"] = bootstrap_ci(sens80, groups, n_boot)
    return out


def inference_seconds(model: torch.nn.Module, dataset: Any, threads: int, guided: bool, repeats: int = 20) -> float:
    """Median single-image latency on `threads` cores (plus the guide's Grad-CAM for guided models)."""
    from core.explain.heatmap import compute_cam

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        image, meta, _ = dataset[0]
        x, m = image.unsqueeze(0), (meta.unsqueeze(0) if model.meta is not None else None)
        with torch.no_grad():
            for _ in range(3):
                model(x, m)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x, m)
                times.append(time.perf_counter() - t0)
        total = float(np.median(times))
        if guided:
            from core.data.transforms import eval_transform
            from core.explain.guided import GUIDE_SIZE, imagenet_guide

            guide = imagenet_guide()
            g = eval_transform(GUIDE_SIZE, config.IMAGENET_MEAN, config.IMAGENET_STD)(torch.zeros(3, 150, 200, dtype=torch.uint8))
            cam_times = []
            for _ in range(5):
                t0 = time.perf_counter()
                with torch.no_grad():
                    top = int(guide(g.unsqueeze(0)).argmax(1))
                compute_cam(guide, g, None, top, "Grad-CAM")
                cam_times.append(time.perf_counter() - t0)
            total += float(np.median(cam_times))
        return total
    finally:
        torch.set_num_threads(before)


def train_seconds(card: dict[str, Any]) -> float | None:
    seconds = [h.get("seconds") for h in card.get("history", []) if h.get("seconds") is not None]
    return float(sum(seconds)) if seconds else None


# -- cross-validation --------------------------------------------------------------------------------------
def fold_splits(frame: pd.DataFrame, folds: int, seed: int, out_dir: Path) -> list[Path]:
    """Lesion-grouped, class-stratified k-fold over all images: fold k is the test set, and a grouped
    15% of the rest is validation (early stopping, temperature). One CSV per fold, written once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"fold{k}.csv" for k in range(folds)]
    if all(p.is_file() for p in paths):
        return paths
    labels, groups = frame["dx"].to_numpy(), frame["group_id"].to_numpy()
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (rest, test) in enumerate(outer.split(np.zeros(len(frame)), labels, groups)):
        inner = StratifiedGroupKFold(n_splits=round(0.85 / 0.15), shuffle=True, random_state=seed + 1 + k)
        _, val = next(inner.split(np.zeros(len(rest)), labels[rest], groups[rest]))
        split = np.full(len(frame), "train", dtype=object)
        split[test] = "test"
        split[rest[val]] = "val"
        pd.DataFrame({"image_id": frame["image_id"], "split": split}).to_csv(paths[k], index=False)
    return paths


def run_cv(args: argparse.Namespace, row: Row, entry: dict[str, Any], data: Data, results: dict[str, Any]) -> None:
    # Folds over every image in the metadata (core.model.train requires each image to have a split),
    # even when --limit means only a sample is decoded here.
    everything, _ = load_ham10000(args.data)
    paths = fold_splits(everything, args.folds, args.seed, args.work_dir / "cv-splits")
    data_dir = data.guided_dir() if row.guided else args.data
    cv = entry.setdefault("cv", {"per_fold": {}})
    cv.update({"status": "running", "note": ""})
    for k, split_file in enumerate(paths):
        if str(k) in cv["per_fold"]:
            continue
        try:
            bundle = train(args, row, data_dir, split_file, args.work_dir / "cv" / row.id / f"fold{k}" / "bundle",
                           args.work_dir / "cv" / row.id / f"fold{k}" / "work", args.seed)
        except TrainingFailed as exc:
            cv.update({"status": "failed", "note": f"fold {k}: {exc}"})
            save_results(results, args.out)
            return
        rows, images = data.get(row.guided)
        fold = dict(zip(*pd.read_csv(split_file)[["image_id", "split"]].to_numpy().T))
        _, card, probs, labels, groups, _ = test_outputs(bundle, rows.assign(split=rows["image_id"].map(fold)), images)
        cv["per_fold"][str(k)] = {**headline_metrics(card, probs, labels, groups), "n_images": int(len(labels))}
        save_results(results, args.out)
    folds = pd.DataFrame(cv["per_fold"].values())
    cv.update({"status": "done", "folds": len(folds),
               "balanced_accuracy_mean": float(folds["balanced_accuracy"].mean()),
               "balanced_accuracy_sd": float(folds["balanced_accuracy"].std(ddof=1)) if len(folds) > 1 else float("nan"),
               "melanoma_auroc_mean": float(folds["melanoma_auroc"].mean()),
               "melanoma_auroc_sd": float(folds["melanoma_auroc"].std(ddof=1)) if len(folds) > 1 else float("nan")})
    save_results(results, args.out)


# -- the study ------------------------------------------------------------------------------------------------
def heavy_reason(row: Row, args: argparse.Namespace) -> str | None:
    """Why a ResNet-50 / Inception-v3 row is not trained here, or None if it will be."""
    from torchvision.models import Inception_V3_Weights, ResNet50_Weights

    weights = {"resnet50": ResNet50_Weights.DEFAULT, "inception_v3": Inception_V3_Weights.DEFAULT}[row.heavy]
    cached = (Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]).is_file()
    lite0 = args.weights_dir / "fusion-lite0" / CARD_FILE
    hours = ""
    if lite0.is_file():
        base = train_seconds(json.loads(lite0.read_text()))
        if base:
            hours = f" about {base * RELATIVE_COST[row.heavy] / 3600:.0f} CPU-hours for 12 epochs at its input size (estimated from the Lite0 run),"
    if not args.with_heavy:
        return (f"Not trained here:{hours} beyond this study's 2-core CPU budget"
                + ("" if cached else ", and its ImageNet weights are not in the torch hub cache (nothing is downloaded)")
                + ". Run with --with-heavy to train it.")
    if not cached:
        return "Not trained here: its ImageNet weights are not in the torch hub cache (nothing is downloaded)."
    return None


@dataclass
class Scored:
    """One row's calibrated test outputs, with the test images' ids (to pair rows image by image)."""
    card: dict[str, Any]
    probs: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    image_ids: np.ndarray


def score_row(bundle: Path, row: Row, data: Data) -> tuple[FusionNet, LesionDataset, Scored]:
    frame, images = data.get(row.guided)
    model, card, probs, labels, groups, dataset = test_outputs(bundle, frame, images)
    ids = frame.loc[frame["split"] == "test", "image_id"].to_numpy()
    return model, dataset, Scored(card, probs, labels, groups, ids)


def aligned(row: list[Scored], reference: Scored) -> list[Scored]:
    """Each training's outputs in the reference's image order."""
    out = []
    for scored in row:
        if not np.array_equal(np.sort(scored.image_ids), np.sort(reference.image_ids)):
            raise ValueError("rows scored on different test images cannot be paired")
        order = pd.Series(np.arange(len(scored.image_ids)), index=scored.image_ids)[reference.image_ids].to_numpy()
        out.append(Scored(scored.card, scored.probs[order], reference.labels, reference.groups, reference.image_ids))
    return out


def paired_with_reference(row_id: str, row: list[Scored], reference: list[Scored], n_boot: int) -> list[dict[str, Any]]:
    """row - reference for each headline metric on the same test images, each training scored by its own
    card's decision rule and each side averaged over its trainings, with the paired lesion-bootstrap
    interval and how it may be worded (`difference_verdict` with the fewer trainings of the two)."""
    first = reference[0]
    try:
        sides = aligned(row, first), aligned(reference, first)
    except ValueError as exc:
        raise ValueError(f"{row_id} and {REFERENCE}: {exc}") from None
    trainings = min(len(row), len(reference))
    out = []
    for metric in deployed_scorers(first.card, first.labels):
        def averaged(side: list[Scored]) -> Callable[[np.ndarray], float]:
            scorers = [(deployed_scorers(s.card, first.labels)[metric], s.probs) for s in side]
            return lambda rows: float(np.mean([score(rows, probs) for score, probs in scorers]))

        diff, lo, hi = paired_difference(averaged(sides[0]), averaged(sides[1]), first.groups, n_boot)
        out.append({"comparison": f"{row_id} - {REFERENCE}", "metric": metric, "difference": diff, "ci95": [lo, hi],
                    "trainings": trainings, "verdict": difference_verdict(lo, hi, trainings=trainings)})
    return out


def paired_differences(args: argparse.Namespace, results: dict[str, Any], data: Data,
                       scored: dict[str, list[Scored]]) -> None:
    """results["differences"]: every evaluated row against row 4, paired (trainings scored in this run
    are reused; others are scored again from their bundles, if they are still on disk)."""
    by_id = {r.id: r for r in ROWS}

    def get(entry: dict[str, Any]) -> list[Scored] | None:
        if entry["id"] not in scored:
            row = by_id[entry["id"]]
            bundles = [bundle_dir(args, row, seed) for seed in row_seeds(args, row)]
            found = [b for b in bundles if (b / CARD_FILE).is_file()]
            if not found or found[0] != bundles[0]:
                return None
            scored[entry["id"]] = [score_row(b, row, data)[2] for b in found]
        return scored[entry["id"]]

    done = [e for e in results["rows"] if e.get("status") == "done"]
    reference = next((get(e) for e in done if e["id"] == REFERENCE), None)
    if reference is None:
        return
    results["differences"] = [d for e in done if e["id"] != REFERENCE and get(e) is not None
                              for d in paired_with_reference(e["id"], scored[e["id"]], reference, args.bootstrap)]


def evaluate_row(args: argparse.Namespace, row: Row, entry: dict[str, Any], bundles: list[Path], data: Data,
                 scored: dict[str, list[Scored]]) -> None:
    """The row's figures from its first training; with --trainings, each further training's headline
    metrics too (their paired comparison with row 4 averages over all of them)."""
    frame, images = data.get(row.guided)
    bundle = bundles[0]
    model, dataset, outputs = score_row(bundle, row, data)
    scored[row.id] = [outputs, *[score_row(b, row, data)[2] for b in bundles[1:]]]
    card, probs, labels, groups = outputs.card, outputs.probs, outputs.labels, outputs.groups
    entry["trainings"] = [{"seed": s.card["training"]["seed"], **headline_metrics(s.card, s.probs, s.labels, s.groups)}
                          for s in scored[row.id]]
    entry.update({
        "status": "done", "bundle": str(bundle), "metrics": row_metrics(probs, labels, groups, card, args.bootstrap),
        "val_metrics": val_metrics(bundle, frame, images),
        "train_seconds": train_seconds(card),
        "infer_seconds_per_image": inference_seconds(model, dataset, args.threads, row.guided),
        "infer_threads": args.threads,
        "input_size": card["input"]["size"], "backbone": card["model"]["backbone"],
        "uses_metadata": card["model"]["use_metadata"], "epochs_run": card.get("training", {}).get("epochs_run"),
        "train_threads": card.get("training", {}).get("threads"),
    })


def headline_metrics(card: dict[str, Any], probs: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (the card's decision rule) and melanoma AUROC, without intervals."""
    mel_t, mel_s = binary_scores(probs, labels, class_indices(card, [card["melanoma"]]))
    return {"balanced_accuracy": balanced_accuracy(labels, Calibration.from_card(card).suggest(probs)),
            "melanoma_auroc": bootstrap_auc(mel_t, mel_s, groups, 0)[0] if 0 < mel_t.sum() < len(mel_t) else float("nan")}


def val_metrics(bundle: Path, frame: pd.DataFrame, images: list[np.ndarray]) -> dict[str, float]:
    """The headline metrics on the validation split: what choices between rows are made on, never
    the test split."""
    _, card, probs, labels, groups, _ = test_outputs(bundle, frame, images, split="val")
    return headline_metrics(card, probs, labels, groups)


def promising(results: dict[str, Any]) -> tuple[bool, str]:
    """Row 2 shows promise if it matches or beats row 1 on validation balanced accuracy or melanoma
    AUROC (the test split plays no part in deciding what to train next)."""
    rows = {e["id"]: e for e in results["rows"]}
    plain, heat = rows.get("papercnn-fusion", {}), rows.get("papercnn-heatmap-fusion", {})
    if not (plain.get("val_metrics") and heat.get("val_metrics")):
        return False, "rows 1 and 2 are not both evaluated on the validation split"
    p, h = plain["val_metrics"], heat["val_metrics"]
    better = h["balanced_accuracy"] >= p["balanced_accuracy"] or h["melanoma_auroc"] >= p["melanoma_auroc"]
    return better, (f"heatmap-guided papercnn on validation: balanced accuracy {h['balanced_accuracy']:.3f} vs "
                    f"{p['balanced_accuracy']:.3f}, melanoma AUROC {h['melanoma_auroc']:.3f} vs {p['melanoma_auroc']:.3f}")


def train_only(args: argparse.Namespace) -> None:
    """Train (or resume) the bundles of the trainable rows in --rows; the evaluation run reuses them."""
    torch.set_num_threads(args.threads)
    data = Data(args)
    for row in ROWS:
        if args.rows and row.id not in args.rows or row.heavy:
            continue
        train_seeds(args, row, data, row_seeds(args, row))


def cross_validation_note(results: dict[str, Any], folds: int) -> str:
    """Mark each evaluated row that has no cross-validation with what it would cost (folds x its
    training time), and summarise which rows were cross-validated."""
    ran, skipped = [], []
    for entry in results["rows"]:
        if entry.get("status") != "done":
            continue
        cv = entry.get("cv", {})
        if cv.get("status") in (None, "not run"):
            hours = folds * (entry.get("train_seconds") or float("nan")) / 3600
            entry["cv"] = {"status": "not run", "per_fold": cv.get("per_fold", {}),
                           "note": f"not run: {folds} more trainings, about {hours:.1f} h on this CPU"}
            skipped.append(entry["label"])
        elif cv.get("status") == "done":
            ran.append(entry["label"])
    return (f"{folds}-fold cross-validation ran for: {', '.join(ran) or 'none'}."
            + (f" Not cross-validated (each fold is a full training run, beyond the 2-core CPU budget of "
               f"one session): {', '.join(skipped)}." if skipped else ""))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    results = load_results(args.out)
    results.update({
        "description": "Same lesion-grouped split for every row (test split: lesions never seen in training). "
                       "95% intervals: lesion bootstrap. Inference: median single-image latency on "
                       f"{args.threads} CPU threads (heatmap-guided rows include the guide network's Grad-CAM). "
                       "Training time: sum of epoch times in the bundle's history, with its epochs and torch "
                       "threads (rows trained on 1 thread ran two at a time on the 2 cores).",
        "split_file": args.split_file.name,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    })
    data = Data(args)
    scored: dict[str, list[Scored]] = {}
    wanted = [r for r in ROWS if not args.rows or r.id in args.rows]
    for row in wanted:
        entry = row_entry(results, row)
        reason_trained = ""
        if entry.get("status") == "done" and not args.re_evaluate and (row.id not in args.cv_models or entry.get("cv", {}).get("status") == "done"):
            log.info("%s: done already", row.id)
            continue
        if row.heavy:
            reason = heavy_reason(row, args)
            if reason:
                without_figures(entry, "not trained", reason)
                save_results(results, args.out)
                continue
        if row.id == "lite0-heatmap-fusion" and not args.force_lite0_heatmap:
            ok, why = promising(results)
            if not ok:
                without_figures(entry, "skipped", f"Not trained: row 2 showed no promise ({why}).")
                save_results(results, args.out)
                continue
            reason_trained = f"Trained because row 2 showed promise ({why})."
        if entry.get("status") != "done" or args.re_evaluate:
            first = bundle_dir(args, row, args.seed)
            if row.reuse:
                if not (first / CARD_FILE).is_file():
                    entry.update({"status": "missing", "note": f"The committed bundle {first} does not exist yet."})
                    save_results(results, args.out)
                    continue
                entry["note"] = f"The committed bundle weights/{row.reuse}, evaluated, not retrained."
            else:
                note = " ".join(filter(None, [
                    reason_trained, f"Trained here: core.model.train {' '.join(row_train_args(row, args.weights_dir))} "
                                    "(the bundle stays under "
                                    "--work-dir, by default runs/compare/bundles; not committed)."]))
                if not (first / CARD_FILE).is_file():
                    # until it is evaluated, the results file says it is in training, with no figures of an
                    # earlier run (a study stopped mid-training leaves that, not stale figures)
                    without_figures(entry, "training", f"Being trained (resumable: re-run to continue). {note}")
                    save_results(results, args.out)
                entry["note"] = note
            try:
                bundles = train_seeds(args, row, data, row_seeds(args, row))
            except TrainingFailed as exc:
                entry.update({"status": "failed", "note": str(exc)})
                save_results(results, args.out)
                continue
            evaluate_row(args, row, entry, bundles, data, scored)
            save_results(results, args.out)
            log.info("%s: %s", row.id, entry["metrics"])
        if row.id in args.cv_models:
            run_cv(args, row, entry, data, results)
    for row in ROWS:  # rows left out of this run still appear, saying why they have no figures
        entry = row_entry(results, row)
        if row not in wanted and entry.get("status") == "pending":
            reason = heavy_reason(row, args) if row.heavy else None
            entry.update({"status": "not trained", "note": reason or (
                "Not run yet: a training run of several CPU-hours on 2 cores; `make compare` runs it (resumable).")})
    results["notes"] = [
        "Reported accuracies in the papers (96%, 94.5%) come from evaluations where images of one lesion can "
        "sit in both training and test sets; these rows never allow that.",
        cross_validation_note(results, args.folds),
    ]
    paired_differences(args, results, data, scored)
    save_results(results, args.out)
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if args.train_only:
        train_only(args)
        return 0
    results = run(args)
    print(comparison_table(results).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
