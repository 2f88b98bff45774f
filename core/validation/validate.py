"""Score any bundle on a clinic's own labelled dermoscopy set, beside the card's HAM10000 figures.

    python -m core.validation.validate --images DIR --labels CSV [--bundle weights/fusion-lite0] [--out DIR]
        [--label-map MAP] [--site-map MAP] [--id-col C] [--label-col C] [--age-col C] [--sex-col C]
        [--site-col C] [--group-col C] [--no-metadata] [--sample N] [--bootstrap N] [--refit-out DIR]

A model card holds the figures of one test split; a clinic has to know how the model does on its
own patients and cameras before anyone relies on it. This scores a folder of images (JPEG, PNG
or DICOM) with a CSV of labels, through the same Predictor the app uses, and reports the card's
figures on it: balanced accuracy over the classes present, per-class recall and precision,
malignant and melanoma AUROC with lesion- (or image-) bootstrap 95% intervals, sensitivity and
specificity at the card's referral thresholds and the threshold that would reach 90% sensitivity
here, the confusion matrix, reliability and expected calibration error, the share of images the
quality and out-of-distribution checks flag (and the metrics without them), and subgroups by the
metadata given. A metric that needs a class the set does not have is "not defined", with the
reason: a melanoma-vs-nevus set has no malignant AUROC beyond melanoma, and so on.

Writes validation.json, predictions.csv (one row per image) and summary.pdf to --out and prints
a short table. Bad input (missing column, wrong path, nothing matching, labels mapping to
nothing) prints one clear message and exits with code 2, writing nothing.

--refit-out writes a *copy* of the bundle whose temperature and referral thresholds are refitted
on this set; its card says where they came from. It never replaces the shipped default.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from core.clinic.dicom import is_dicom, read_dicom
from core.clinic.imageio import load_rgb
from core.config import DEFAULT_MODEL, REPO_ROOT, WEIGHTS_DIR
from core.data.metadata import UNKNOWN
from core.errors import InputError
from core.inference import Prediction, Predictor
from core.model.bundle import BundleError, read_card, write_card
from core.model.calibration import (
    balanced_accuracy,
    binary_reliability,
    ece_from_bins,
    fit_temperature,
    reliability_bins,
)
from core.model.evaluate import (
    binary_curves,
    binary_scores,
    bootstrap_auc,
    bootstrap_ci,
    class_indices,
    sens_spec,
    subgroup_metrics,
    threshold_for_sensitivity,
)
from core.validation.inputs import ValidationSet, load_set
from core.validation.label_maps import load_user_map

log = logging.getLogger(__name__)

TARGET_SENSITIVITY = 0.90
N_BOOT = 1000
SUBGROUP_BOOT = 200
BATCH_SIZE = 32
Progress = Callable[[int, int], None]
Reader = Callable[[str], bytes]


# -- scoring ---------------------------------------------------------------------------------
@dataclass
class Scored:
    """Predictions for the images that could be decoded, row-aligned with `rows`."""

    rows: pd.DataFrame
    predictions: list[Prediction]
    probs: np.ndarray
    labels: np.ndarray
    pred: np.ndarray
    unreadable: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def flags(self) -> list[list[str]]:
        return [p.flags for p in self.predictions]

    @property
    def withheld(self) -> np.ndarray | None:
        """The checks' 'withheld' grade per image, where the quality report has one."""
        values = [getattr(p.quality, "withheld", None) for p in self.predictions]
        return None if any(v is None for v in values) or not values else np.array(values, dtype=bool)


def read_file(path: str) -> bytes:
    """A set's file from disk (a ZIP's files come from `ZipSet.read` instead); InputError if unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})") from None


def _decode(path: str, accepted_sites: list[str], read: Reader) -> tuple[np.ndarray, dict[str, Any]]:
    """One file -> RGB array and any metadata its DICOM tags carry; InputError if it cannot be read."""
    data = read(path)
    if not data:
        raise InputError("the file is empty")
    if is_dicom(data, path):
        case = read_dicom(data, accepted_sites)
        return np.asarray(case.image), case.metadata
    return np.asarray(load_rgb(data)), {}


def _meta(row: pd.Series, tags: dict[str, Any]) -> dict[str, Any]:
    """The CSV's metadata for one image; DICOM tags fill what the CSV leaves unknown."""
    age = None if pd.isna(row["age"]) else float(row["age"])
    meta = {"age": age if age is not None else tags.get("age"),
            "sex": row["sex"] if row["sex"] != UNKNOWN else tags.get("sex"),
            "site": row["site"] if row["site"] != UNKNOWN else tags.get("site")}
    return meta


def score(predictor: Predictor, vset: ValidationSet, batch_size: int = BATCH_SIZE,
          progress: Progress | None = None, read: Reader = read_file) -> Scored:
    """Decode and predict every image of the set (each file's bytes from `read`): one forward per
    batch, the app's own checks.

    Files that cannot be decoded are skipped and listed. Decoding the next batch (PIL, outside
    torch) overlaps the current batch's forward pass; torch itself runs in this thread only.
    """
    start = time.perf_counter()
    rows = vset.rows
    accepted = predictor.encoder.accepted_sites
    kept, predictions, unreadable = [], [], []

    def decode_batch(chunk: range) -> list[tuple[int, Any]]:
        out = []
        for i in chunk:
            try:
                out.append((i, _decode(rows.at[i, "file"], accepted, read)))
            except InputError as exc:
                out.append((i, str(exc)))
            except Exception as exc:  # noqa: BLE001 - one odd file must not stop a set of thousands
                log.warning("%s could not be decoded: %r", rows.at[i, "relative"], exc)
                out.append((i, f"could not be decoded ({exc.__class__.__name__})"))
        return out

    chunks = [range(s, min(s + batch_size, len(rows))) for s in range(0, len(rows), batch_size)]
    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(decode_batch, chunks[0]) if chunks else None
        for k in range(len(chunks)):
            decoded = pending.result()
            pending = pool.submit(decode_batch, chunks[k + 1]) if k + 1 < len(chunks) else None
            good = [(i, d) for i, d in decoded if not isinstance(d, str)]
            unreadable += [{"file": rows.at[i, "relative"], "id": rows.at[i, "id"], "reason": d}
                           for i, d in decoded if isinstance(d, str)]
            if good:
                rgbs = [rgb for _, (rgb, _) in good]
                tensors = torch.stack([predictor.tensor_from_rgb(rgb) for rgb in rgbs])
                metas = [_meta(rows.loc[i], tags) for i, (_, tags) in good]
                predictions += predictor.predict_decoded(rgbs, tensors, metas)
                kept += [i for i, _ in good]
            done += len(decoded)
            if progress:
                progress(done, len(rows))
    scored_rows = rows.loc[kept].reset_index(drop=True)
    classes = predictor.classes
    probs = np.array([[p.probs[c] for c in classes] for p in predictions]).reshape(-1, len(classes))
    labels = scored_rows["code"].map(classes.index).to_numpy(dtype=int)
    pred = np.array([classes.index(p.top) for p in predictions], dtype=int)
    return Scored(scored_rows, predictions, probs, labels, pred, unreadable, time.perf_counter() - start)


# -- metrics ---------------------------------------------------------------------------------
def defined(value: float, ci: Sequence[float] | None = None, **extra: Any) -> dict[str, Any]:
    """A metric with its value (and interval)."""
    return {"value": float(value), "ci95": [float(ci[0]), float(ci[1])] if ci is not None else None,
            "reason": None, **extra}


def not_defined(reason: str, **extra: Any) -> dict[str, Any]:
    """A metric this set cannot define, and why (e.g. a class it does not contain)."""
    return {"value": None, "ci95": None, "reason": reason, **extra}


def _name(card: dict[str, Any], code: str) -> str:
    return str(card.get("class_names", {}).get(code, code))


def _binary(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, card: dict[str, Any], task: str,
            n_boot: int) -> dict[str, Any]:
    """AUROC (bootstrap CI), sensitivity/specificity at the card's threshold, and the threshold that
    reaches the target sensitivity on this set, for 'malignant' or 'melanoma' vs the rest."""
    names = card["malignant"] if task == "malignant" else [card["melanoma"]]
    truth, risk = binary_scores(probs, labels, class_indices(card, names))
    pos, neg = int(truth.sum()), int(len(truth) - truth.sum())
    what = "malignant lesions (" + ", ".join(names) + ")" if task == "malignant" else "melanomas"
    other = "benign lesions" if task == "malignant" else "lesions other than melanoma"
    no_pos, no_neg = f"no {what} in this set", f"no {other} in this set"
    out: dict[str, Any] = {"positives": pos, "negatives": neg}
    if pos and neg:
        auc, lo, hi = bootstrap_auc(truth, risk, groups, n_boot)
        out["auroc"] = defined(auc, (lo, hi))
    else:
        out["auroc"] = not_defined(f"AUROC needs both kinds of lesion: {no_pos if not pos else no_neg}")
    threshold = card.get("referral_thresholds", {}).get(task, {}).get("threshold")
    if threshold is None:
        out["threshold"] = None
        out["sensitivity"] = out["specificity"] = not_defined("the card has no referral threshold")
    else:
        sens, spec = sens_spec(truth, risk, float(threshold))
        out["threshold"] = float(threshold)
        out["sensitivity"] = defined(sens) if pos else not_defined(f"sensitivity needs positives: {no_pos}")
        out["specificity"] = defined(spec) if neg else not_defined(f"specificity needs negatives: {no_neg}")
    if pos:
        local = threshold_for_sensitivity(truth, risk, TARGET_SENSITIVITY)
        s, p = sens_spec(truth, risk, local)
        out["threshold_for_target"] = defined(local, sensitivity=s, specificity=p if neg else None,
                                              target=TARGET_SENSITIVITY)
    else:
        out["threshold_for_target"] = not_defined(f"needs positives: {no_pos}", target=TARGET_SENSITIVITY)
    bins = binary_reliability(truth, risk)
    out["reliability"] = bins
    out["ece"] = ece_from_bins(bins)
    out["mean_risk"], out["prevalence"] = float(risk.mean()), float(truth.mean())
    out["curves"] = binary_curves(truth, risk)
    return out


def metric_block(probs: np.ndarray, labels: np.ndarray, pred: np.ndarray, groups: np.ndarray,
                 card: dict[str, Any], n_boot: int = N_BOOT) -> dict[str, Any]:
    """Every figure for one subset of scored images (all of them, or those that passed the checks)."""
    classes = card["classes"]
    if len(labels) == 0:
        return {"n_images": 0, "reason": "no images in this subset"}
    present = sorted(set(labels.tolist()))
    ba = balanced_accuracy(labels, pred)
    ci = bootstrap_ci(lambda p: balanced_accuracy(labels[p], pred[p]), groups, n_boot)
    prec, rec, _, support = precision_recall_fscore_support(labels, pred, labels=list(range(len(classes))),
                                                            zero_division=0)
    predicted = np.bincount(pred, minlength=len(classes))
    per_class = {}
    for i, code in enumerate(classes):
        per_class[code] = {
            "support": int(support[i]), "suggested": int(predicted[i]),
            "recall": defined(rec[i]) if support[i] else not_defined(f"no {_name(card, code)} in this set"),
            "precision": defined(prec[i]) if predicted[i] else not_defined("never suggested on this set"),
        }
    top_bins = reliability_bins(probs, labels)
    return {
        "n_images": int(len(labels)),
        "n_groups": int(len(np.unique(groups))),
        "classes_present": [classes[i] for i in present],
        "balanced_accuracy": defined(ba, ci, over=[classes[i] for i in present]),
        "accuracy": defined(float(np.mean(pred == labels))),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(len(classes)))).tolist(),
        "malignant": _binary(probs, labels, groups, card, "malignant", n_boot),
        "melanoma": _binary(probs, labels, groups, card, "melanoma", n_boot),
        "reliability_top": top_bins,
        "ece_top": ece_from_bins(top_bins),
    }


def card_reference(card: dict[str, Any], set_has_metadata: bool) -> dict[str, Any]:
    """The card's HAM10000 test figures to show beside this set's: with metadata withheld when the
    set has none and the card has that view (a fair comparison), else with all inputs."""
    metrics = card.get("metrics") or {}
    uses_metadata = bool(card.get("model", {}).get("use_metadata"))
    view = "metadata_withheld" if (not set_has_metadata and uses_metadata and "metadata_withheld" in metrics) else "all_inputs"
    label = {"all_inputs": "HAM10000 test split", "metadata_withheld": "HAM10000 test split, metadata withheld"}[view]
    if not metrics.get(view):
        label = "model card (holds no test figures)"
    return {"view": view, "label": label, "metrics": metrics.get(view),
            "ece_top": _card_ece(metrics.get("calibration") or {}), "split": metrics.get("split", "test")}


def _card_ece(calibration: dict[str, Any]) -> float | None:
    """The card's top-class ECE after calibration (older cards call it ece_after)."""
    return calibration.get("ece_top_after", calibration.get("ece_after"))


def quality_summary(scored: Scored) -> dict[str, Any]:
    """How many images the quality and out-of-distribution checks flagged, by flag."""
    flags = scored.flags
    n = len(flags)
    by_flag: dict[str, int] = {}
    for image_flags in flags:
        for flag in image_flags:
            by_flag[flag] = by_flag.get(flag, 0) + 1
    flagged = sum(1 for f in flags if f)
    withheld = scored.withheld
    grades = [getattr(p.quality, "grade", None) for p in scored.predictions]
    by_grade: dict[str, int] = {}
    for grade in grades:
        if grade is not None:
            by_grade[grade] = by_grade.get(grade, 0) + 1
    return {
        "n_images": n, "flagged": flagged, "flagged_share": flagged / n if n else float("nan"),
        "by_flag": dict(sorted(by_flag.items(), key=lambda kv: -kv[1])),
        "by_grade": by_grade or None,
        "withheld": None if withheld is None else int(withheld.sum()),
    }


def subgroups(scored: Scored, vset: ValidationSet, card: dict[str, Any], n_boot: int = N_BOOT) -> dict[str, Any]:
    """evaluate.subgroup_metrics over the metadata this set gives (variables without data dropped).

    Subgroup intervals use at most SUBGROUP_BOOT resamples: every subgroup and metric has its own
    bootstrap, and with 1,000 each they would cost more than scoring the images."""
    columns = vset.columns
    variables = {"sex": columns.sex, "age band": columns.age, "body site": columns.site,
                 "diagnosis confirmation": columns.confirmation}
    wanted = [v for v, c in variables.items() if c]
    if not wanted or not len(scored.rows):
        return {"rows": [], "reason": "the set gives no age, sex or body site" if not wanted else "no images"}
    rows = scored.rows
    frame = pd.DataFrame({
        "sex": rows["sex"], "age": rows["age"], "age_missing": rows["age"].isna(), "site": rows["site"],
        "dx_type": rows["confirmation"] if columns.confirmation else "", "group_id": rows["group"],
    })
    n_boot = min(n_boot, SUBGROUP_BOOT)
    table = subgroup_metrics(scored.probs, scored.labels, frame, card, n_boot)
    return {"rows": [r for r in table if r["variable"] in wanted], "reason": None, "resamples": n_boot}


def build_report(scored: Scored, vset: ValidationSet, card: dict[str, Any], bundle: str,
                 n_boot: int = N_BOOT) -> dict[str, Any]:
    """Everything the JSON, the printed table, the page and the PDF show."""
    if not len(scored.rows):
        raise InputError(f"None of the {len(vset.rows)} matched images could be decoded "
                         f"(e.g. {scored.unreadable[0]['file']}: {scored.unreadable[0]['reason']}).")
    groups = scored.rows["group"].to_numpy()
    passed = np.array([not f for f in scored.flags], dtype=bool)
    all_block = metric_block(scored.probs, scored.labels, scored.pred, groups, card, n_boot)
    passed_block = (metric_block(scored.probs[passed], scored.labels[passed], scored.pred[passed], groups[passed],
                                 card, n_boot) if 0 < passed.sum() < len(passed) else None)
    withheld = scored.withheld
    shown_block = None
    if withheld is not None and 0 < withheld.sum() < len(withheld):
        shown = ~withheld
        shown_block = metric_block(scored.probs[shown], scored.labels[shown], scored.pred[shown], groups[shown],
                                   card, n_boot)
    problems = dict(vset.problems)
    problems["unreadable_images"] = {"count": len(scored.unreadable), "items": scored.unreadable[:200]}
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {"path": bundle, "name": card.get("name"), "version": card.get("version"),
                   "sha256": card.get("sha256"), "uses_metadata": bool(card.get("model", {}).get("use_metadata"))},
        "set": {**vset.describe(), "problems": problems, "scored_images": int(len(scored.rows)),
                "metadata_given": vset.columns.metadata},
        "metrics": {"all": all_block, "passed_checks": passed_block, "not_withheld": shown_block},
        "quality": quality_summary(scored),
        "subgroups": subgroups(scored, vset, card, n_boot),
        "reference": card_reference(card, vset.has_metadata),
        "target_sensitivity": TARGET_SENSITIVITY,
        "bootstrap": {"resamples": n_boot, "unit": "lesion/patient (column " + vset.columns.group + ")"
                      if vset.columns.group else "image (no lesion or patient column)"},
        "seconds": {"scoring": round(scored.seconds, 2)},
        "classes": list(card["classes"]),
        "class_names": dict(card.get("class_names", {})),
    }


def predictions_frame(scored: Scored, classes: list[str]) -> pd.DataFrame:
    """One row per image: the truth, the metadata used, every probability, the risks, the checks.
    Files that could not be decoded are listed at the end with the reason."""
    rows = scored.rows
    out = pd.DataFrame({"id": rows["id"], "file": rows["relative"], "label": rows["label"], "code": rows["code"],
                        "group": rows["group"]})
    out["age"] = [p.metadata_used.get("age") for p in scored.predictions]
    out["sex"] = [p.metadata_used.get("sex") for p in scored.predictions]
    out["site"] = [p.metadata_used.get("site") for p in scored.predictions]
    for j, code in enumerate(classes):
        out[f"p_{code}"] = scored.probs[:, j].round(6) if len(scored.probs) else []
    out["malignant_risk"] = [round(p.malignant, 6) for p in scored.predictions]
    out["melanoma_risk"] = [round(p.melanoma, 6) for p in scored.predictions]
    out["suggested"] = [p.top for p in scored.predictions]
    out["most_probable"] = [p.most_probable for p in scored.predictions]
    out["correct"] = out["suggested"] == out["code"]
    out["refer_malignant"] = [p.refer_malignant for p in scored.predictions]
    out["refer_melanoma"] = [p.refer_melanoma for p in scored.predictions]
    out["quality_flags"] = ["; ".join(p.flags) for p in scored.predictions]
    withheld = scored.withheld
    if withheld is not None:
        out["withheld"] = withheld
    out["status"] = "scored"
    if scored.unreadable:
        bad = pd.DataFrame([{"id": u["id"], "file": u["file"], "status": f"not scored: {u['reason']}"}
                            for u in scored.unreadable])
        out = pd.concat([out, bad], ignore_index=True)
    return out


# -- the optional refit ------------------------------------------------------------------------
def check_refit_target(bundle_dir: Path | str, out_dir: Path | str) -> tuple[Path, Path]:
    """(source, target) resolved, or InputError if the target is the source, the shipped default,
    inside either, or an existing non-empty folder: a refit never replaces a bundle."""
    src, out = Path(bundle_dir).resolve(), Path(out_dir).expanduser().resolve()
    default = (WEIGHTS_DIR / DEFAULT_MODEL).resolve()
    if out in (src, default) or src in out.parents or default in out.parents:
        raise InputError(f"--refit-out {out_dir} would overwrite a bundle: choose a new folder.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--refit-out {out_dir} exists and is not empty: choose a new folder.")
    return src, out


def refit_bundle(bundle_dir: Path | str, out_dir: Path | str, scored: Scored, card: dict[str, Any],
                 set_label: str) -> dict[str, Any]:
    """A copy of the bundle with the temperature and the referral thresholds refitted on this set.

    The weights are copied unchanged (their sha256 still holds). The temperature is refitted on
    the calibrated probabilities' log (softmax(log p / s) == softmax((logits + bias) / (T s))), so
    no second forward is needed; thresholds are the highest reaching the target sensitivity
    here. The card records where both came from. Refuses to write over any existing folder, the
    source bundle, or the shipped default.
    """
    src, out = check_refit_target(bundle_dir, out_dir)
    old = card.get("calibration", {}).get("temperature", card.get("temperature", 1.0))
    log_p = torch.log(torch.as_tensor(np.clip(scored.probs, 1e-12, 1.0)))
    present = np.unique(scored.labels)
    notes = []
    if len(present) >= 2:
        scale = fit_temperature(log_p, np.array(scored.labels))
        new_t = float(old) * scale
        probs = torch.softmax(log_p / scale, dim=1).numpy()
    else:
        new_t, probs = float(old), scored.probs
        notes.append("temperature kept: one class only in this set")
    if len(present) < len(card["classes"]):
        notes.append(f"only {len(present)} of {len(card['classes'])} classes in this set: the temperature is "
                     "fitted on those classes alone")
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    how = (f"highest threshold reaching {TARGET_SENSITIVITY:.0%} sensitivity on the local set {set_label} "
           f"({len(scored.labels)} images), refitted by core.validation.validate on {when}")
    thresholds = json.loads(json.dumps(card.get("referral_thresholds", {})))
    for task, names in (("malignant", card["malignant"]), ("melanoma", [card["melanoma"]])):
        truth, risk = binary_scores(probs, scored.labels, class_indices(card, names))
        if truth.sum():
            previous = thresholds.get(task, {})
            thresholds[task] = {"threshold": threshold_for_sensitivity(truth, risk, TARGET_SENSITIVITY), "how": how,
                                "previous": previous.get("threshold"), "previous_how": previous.get("how")}
        else:
            notes.append(f"{task} threshold kept: no positives in this set")
    shutil.copytree(src, out)
    new = json.loads(json.dumps(card))
    new["name"] = f"{card.get('name', 'model')}-local"
    new["temperature"] = round(new_t, 6)
    if isinstance(new.get("calibration"), dict):
        new["calibration"]["temperature"] = round(new_t, 6)
    new["referral_thresholds"] = thresholds
    new["local_refit"] = {
        "source_bundle": str(bundle_dir), "source_name": card.get("name"), "source_sha256": card.get("sha256"),
        "set": set_label, "n_images": int(len(scored.labels)),
        "classes_present": [card["classes"][i] for i in present], "created": when,
        "temperature": {"before": float(old), "after": round(new_t, 6)}, "notes": notes,
        "warning": "Temperature and thresholds were fitted on this local set: figures measured on the same images "
                   "are optimistic. Check them on a second local set before use. The card's 'metrics' are the "
                   "source bundle's HAM10000 figures, before this refit.",
    }
    write_card(new, out)
    return new["local_refit"]


# -- output ------------------------------------------------------------------------------------
def clean_json(value: Any) -> Any:
    """NaN and infinities -> null, numpy -> Python (strict JSON that any reader accepts)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_outputs(report: dict[str, Any], predictions: pd.DataFrame, out_dir: Path | str, pdf: bytes | None = None) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "validation.json", "csv": out / "predictions.csv"}
    paths["json"].write_text(json.dumps(clean_json(report), indent=1) + "\n")
    predictions.to_csv(paths["csv"], index=False)
    if pdf is not None:
        paths["pdf"] = out / "summary.pdf"
        paths["pdf"].write_bytes(pdf)
    return paths


# -- the whole run -----------------------------------------------------------------------------
def run(predictor: Predictor, vset: ValidationSet, bundle: str, n_boot: int = N_BOOT,
        batch_size: int = BATCH_SIZE, progress: Progress | None = None,
        read: Reader = read_file) -> tuple[dict[str, Any], Scored]:
    """Score the set and build the report: what the command and the page both call."""
    scored = score(predictor, vset, batch_size, progress, read)
    start = time.perf_counter()
    report = build_report(scored, vset, predictor.card, bundle, n_boot)
    report["seconds"]["metrics"] = round(time.perf_counter() - start, 2)
    return report, scored


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.validation.validate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Exit codes: 0 done, 2 bad input (a message says what).")
    p.add_argument("--images", type=Path, required=True, help="folder of images (JPEG, PNG, DICOM; searched recursively)")
    p.add_argument("--labels", type=Path, required=True, help="CSV with one row per image")
    p.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL, help="model bundle (default: %(default)s)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/validate/<images folder name>)")
    p.add_argument("--label-map", type=Path, help="CSV (label,code) or JSON {label: code} for labels other than the "
                   "built-in names; an empty code leaves a label out")
    p.add_argument("--site-map", type=Path, help="CSV or JSON {site: model site} for body sites in another vocabulary")
    for role in ("id", "label", "age", "sex", "site", "group"):
        extra = " ('' for none)" if role not in ("id", "label") else ""
        what = {"id": "image file name or id (with or without extension)", "group": "lesion or patient id (bootstrap unit)"}.get(role, role)
        p.add_argument(f"--{role}-col", help=f"column with the {what}; detected if not given{extra}")
    p.add_argument("--no-metadata", action="store_true", help="ignore age, sex and site columns")
    p.add_argument("--sample", type=int, help="score a seeded random sample of this many images")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, help="bootstrap resamples for the intervals (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--refit-out", type=Path, help="also write a copy of the bundle with temperature and referral "
                   "thresholds refitted on this set, to this new folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from core.validation.report import pdf_summary, text_table  # plotting/PDF imports only when needed

    try:
        if args.sample is not None and args.sample < 1:
            raise InputError("--sample must be at least 1.")
        if args.bootstrap < 0 or args.batch_size < 1:
            raise InputError("--bootstrap must be >= 0 and --batch-size >= 1.")
        card = read_card(args.bundle)
        if args.refit_out:
            check_refit_target(args.bundle, args.refit_out)
        label_map = load_user_map(args.label_map, card["classes"], "label") if args.label_map else None
        site_map = None
        if args.site_map:
            from core.data.metadata import MetadataEncoder

            site_map = load_user_map(args.site_map, MetadataEncoder.from_dict(card["metadata"]).accepted_sites, "site")
        given = {role: getattr(args, f"{role}_col") for role in ("id", "label", "age", "sex", "site", "group")}
        vset = load_set(args.images, args.labels, card, given, label_map, site_map,
                        ignore_metadata=args.no_metadata, sample=args.sample)
        if args.threads:
            torch.set_num_threads(args.threads)
        predictor = Predictor.load(args.bundle)
        bar = None if args.quiet else _bar(len(vset.rows))
        report, scored = run(predictor, vset, str(args.bundle), args.bootstrap, args.batch_size,
                             bar.update_to if bar else None)
        if bar:
            bar.close()
        refit = None
        if args.refit_out:
            refit = refit_bundle(args.bundle, args.refit_out, scored, card, str(args.images))
            report["refit"] = {"out": str(args.refit_out), **refit}
        out = args.out or REPO_ROOT / "runs" / "validate" / (args.images.resolve().name or "set")
        paths = write_outputs(report, predictions_frame(scored, predictor.classes), out, pdf_summary(report))
    except (InputError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder that cannot be written
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    print(text_table(report))
    print("\nWritten: " + ", ".join(str(p) for p in paths.values()))
    if refit:
        print(f"Refitted copy of the bundle: {args.refit_out} (temperature {refit['temperature']['before']:.3f} -> "
              f"{refit['temperature']['after']:.3f}; see local_refit in its card). The shipped bundle is unchanged.")
    return 0


def _bar(total: int) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, desc="images", unit="img", file=sys.stderr)
    bar.update_to = lambda done, _total: bar.update(done - bar.n)
    return bar


if __name__ == "__main__":
    raise SystemExit(main())
