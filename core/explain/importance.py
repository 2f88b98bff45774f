"""Which inputs drive the model: permutation importance and SHAP.

    python -m core.explain.importance --bundle weights/fusion-lite0     (writes weights/fusion-lite0/explanations.json)

Global results (permutation importance, metadata SHAP summaries) are computed here on the
validation split and stored next to the bundle, so the Explanations page shows them on a
machine without the dataset. Per-case explanations (the metadata waterfall, the image SHAP map,
CAM faithfulness) are computed live by the page for the image being examined.

Everything that needs many model calls runs on cached image features and the cheap fusion
head (`core.model.evaluate.extract` / `head_logits`): the backbone sees each image once.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SPLITS_DIR, WEIGHTS_DIR
from core.data.metadata import UNKNOWN, MetadataEncoder
from core.errors import InputError
from core.model.bundle import load_bundle, read_card
from core.model.calibration import Calibration, balanced_accuracy
from core.model.concurrency import model_slot
from core.model.evaluate import bootstrap_ci, eval_dataset, extract, flip_average, head_logits
from core.model.networks import FusionNet

log = logging.getLogger(__name__)

EXPLANATIONS_FILE = "explanations.json"
IMAGE_GROUP = "image features"
#: The three metadata fields a clinician enters; SHAP treats each as one player.
FIELDS: tuple[str, ...] = ("age", "sex", "site")
Predict = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image features, metadata) -> probabilities
Decide = Callable[[np.ndarray], np.ndarray]  # probabilities -> class indices
Progress = Callable[[float], None]
Stage = Callable[[float, str], None]  # (fraction of the stage done, what is being done)


# -- permutation importance ---------------------------------------------------------------
def feature_groups(feature_names: list[str]) -> dict[str, list[int]]:
    """Columns to shuffle together: one group per field a clinician enters.

    `age` covers the age value and its missing flag; `sex` every sex_* column; `site` every
    site_* and region_* column (the fine site and its coarse region describe one entry). A
    one-hot level is never shuffled alone: that would make impossible inputs (two sites set,
    or none) and separate a site from its region.
    """
    prefixes = {"age": ("age",), "sex": ("sex_",), "site": ("site_", "region_")}
    groups = {field: [i for i, n in enumerate(feature_names) if n.startswith(prefixes[field])] for field in FIELDS}
    return {k: v for k, v in groups.items() if v}


def _scores(probs: np.ndarray, labels: np.ndarray, positive: int, decide: Decide,
            rows: np.ndarray | None = None) -> dict[str, float]:
    if rows is not None:
        probs, labels = probs[rows], labels[rows]
    truth = (labels == positive).astype(int)
    auc = float(roc_auc_score(truth, probs[:, positive])) if 0 < truth.sum() < len(truth) else float("nan")
    return {"balanced_accuracy": balanced_accuracy(labels, decide(probs)), "melanoma_auroc": auc}


def permutation_importance(
    predict: Predict,
    image: np.ndarray,
    meta: np.ndarray,
    labels: np.ndarray,
    groups: dict[str, list[int]],
    positive: int,
    n_repeats: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
    lesions: np.ndarray | None = None,
    n_boot: int = 200,
    decide: Decide | None = None,
) -> pd.DataFrame:
    """Drop in balanced accuracy and melanoma AUROC when each group of inputs is shuffled.

    A metadata group's columns are shuffled together (one permutation of rows), which keeps a
    one-hot field one-hot; the image features are shuffled as one group, i.e. each case gets
    another case's image. The drop is averaged over `n_repeats` shuffles; its 95% interval
    resamples whole lesions (`lesions`, one id per row; every row its own lesion if None), so
    it says how sure this split is of the drop, which the spread over shuffles does not. An
    interval that contains 0 means no measurable importance. `decide` turns probabilities into
    classes (the card's decision rule; plain argmax if None).
    """
    if n_repeats < 1:
        raise InputError("The number of repeats must be at least 1.")
    decide = decide or (lambda p: p.argmax(1))
    rng = np.random.default_rng(seed)
    base_probs = predict(image, meta)
    baseline = _scores(base_probs, labels, positive, decide)
    lesions = np.arange(len(labels)) if lesions is None else np.asarray(lesions)
    jobs = [(IMAGE_GROUP, None), *groups.items()]
    rows = []
    for done, (name, cols) in enumerate(jobs):
        shuffled_probs = []
        for _ in range(n_repeats):
            order = rng.permutation(len(labels))
            if cols is None:
                shuffled_probs.append(predict(image[order], meta))
            else:
                shuffled = meta.copy()
                shuffled[:, cols] = meta[order][:, cols]
                shuffled_probs.append(predict(image, shuffled))

        def drop(pick: np.ndarray | None, metric: str) -> float:
            base = _scores(base_probs, labels, positive, decide, pick)[metric]
            return base - float(np.mean([_scores(p, labels, positive, decide, pick)[metric] for p in shuffled_probs]))

        for metric in baseline:
            estimate = drop(None, metric)
            lo, hi = bootstrap_ci(lambda pick: drop(pick, metric), lesions, n_boot, seed) if n_boot else (estimate,) * 2
            rows.append({"feature": name, "kind": "image" if cols is None else "field", "metric": metric,
                         "baseline": baseline[metric], "drop_mean": estimate, "ci95_low": lo, "ci95_high": hi,
                         "measurable": bool(lo > 0 or hi < 0)})
        if progress:
            progress((done + 1) / len(jobs))
    return pd.DataFrame(rows)


def head_predictor(model: FusionNet, calibration: Calibration | None = None) -> Predict:
    """(cached image features, metadata vectors) -> calibrated probabilities, via the fusion head."""
    calibration = calibration or Calibration.identity(model.num_classes)

    def predict(features: np.ndarray, meta: np.ndarray) -> np.ndarray:
        m = torch.as_tensor(meta, dtype=torch.float32) if model.meta is not None else None
        logits = head_logits(model, torch.as_tensor(features, dtype=torch.float32), m)
        return calibration.probs(logits)

    return predict


# -- SHAP for metadata --------------------------------------------------------------------
class MetadataGame:
    """The fusion head as a function of which metadata fields are given, for one bound case.

    A coalition row z in {0,1}^3 says which of (age, sex, site) are entered; the others are
    "unknown", exactly what the app does when a clinician leaves a field blank. So the SHAP
    baseline is the prediction with all metadata withheld, and the values say how much each
    entered field moved this case's prediction: a question a clinician can act on.
    """

    def __init__(self, model: FusionNet, encoder: MetadataEncoder, calibration: Calibration | None = None) -> None:
        if model.meta is None:
            raise InputError("This model does not use metadata, so there is nothing to explain about it.")
        self.predict = head_predictor(model, calibration)
        self.encoder = encoder
        self.features: np.ndarray | None = None
        self.record: tuple[Any, Any, Any] = (None, None, None)

    def bind(self, features: np.ndarray, age: Any, sex: Any, site: Any) -> np.ndarray:
        """Bind one case; returns its coalition row (1 for each field that is actually given)."""
        self.features = np.asarray(features, dtype=np.float32).reshape(1, -1)
        self.record = self.encoder.check(age, sex, site)
        return np.array([[self.record[0] is not None, self.record[1] != UNKNOWN, self.record[2] != UNKNOWN]], dtype=float)

    def __call__(self, coalitions: np.ndarray) -> np.ndarray:
        if self.features is None:
            raise RuntimeError("bind() a case first")
        rows = [self.encoder.encode(*(v if keep else None for v, keep in zip(self.record, z > 0.5))) for z in coalitions]
        return self.predict(np.repeat(self.features, len(rows), 0), np.stack(rows))


@dataclass
class CaseShap:
    """Metadata SHAP for one case: per class, the base (metadata withheld) and each field's push."""

    classes: list[str]
    fields: list[str]
    values: np.ndarray  # (fields, classes)
    base: np.ndarray  # (classes,)
    given: dict[str, Any]

    def for_output(self, idx: list[int]) -> tuple[np.ndarray, float]:
        """Values and base for a class or a sum of classes (Shapley values add across outputs)."""
        return self.values[:, idx].sum(axis=1), float(self.base[idx].sum())

    def labels(self) -> list[str]:
        """'field = value' per field ('unknown' where left blank): the waterfall's steps."""
        return [f"{f} = {_value_label(f, self.given[f])}" for f in self.fields]


def _shap_exact(game: MetadataGame) -> Any:
    import shap

    return shap.explainers.Exact(game, shap.maskers.Independent(np.zeros((1, len(FIELDS)))))


def exact_shapley(game: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Shapley values of a small game, by enumerating every coalition (2^M evaluations, one batch).

    Returns (values (M, outputs), base (outputs,)). Players with x == 0 (fields not given) are
    absent from every coalition, so their value is 0, as in shap's Exact explainer with an
    all-zero background (tests check the two agree). Used for the live per-case waterfall:
    shap's explainers compile numba code on their first call, about 20 s that a page should
    not make a clinician wait for; the global summary, computed offline, uses shap itself.
    """
    from itertools import product
    from math import factorial

    m = len(x)
    present = np.flatnonzero(np.asarray(x) > 0.5)
    coalitions = np.array([c for c in product((0.0, 1.0), repeat=m) if not np.any(np.delete(c, present))])
    values = np.asarray(game(coalitions))
    index = {tuple(c): i for i, c in enumerate(coalitions)}
    n = len(present)
    phi = np.zeros((m, values.shape[1]))
    for player in present:
        for c in coalitions:
            if c[player]:
                continue
            with_player = c.copy()
            with_player[player] = 1.0
            size = int(c.sum())
            weight = factorial(size) * factorial(n - size - 1) / factorial(n)
            phi[player] += weight * (values[index[tuple(with_player)]] - values[index[tuple(c)]])
    return phi, values[index[(0.0,) * m]]


def case_metadata_shap(game: MetadataGame, features: np.ndarray, age: Any, sex: Any, site: Any,
                       classes: list[str], explainer: Any = None) -> CaseShap:
    """Shapley values of the three fields for one case: the base is the metadata-withheld prediction.

    With `explainer` (a shap Exact explainer over `game`) shap computes them; without, the same
    values are computed by enumeration in a few milliseconds (see `exact_shapley`).
    """
    x = game.bind(features, age, sex, site)
    if explainer is None:
        values, base = exact_shapley(game, x[0])
    else:
        explanation = explainer(x, silent=True)
        values, base = np.asarray(explanation.values[0]), np.asarray(explanation.base_values[0])
    return CaseShap(classes, list(FIELDS), values, base, dict(zip(FIELDS, game.record)))


def _value_label(field: str, value: Any) -> str:
    if value is None:
        return UNKNOWN
    return f"{float(value):g}" if field == "age" else str(value)


def global_metadata_shap(
    game: MetadataGame, features: np.ndarray, records: list[tuple[Any, Any, Any]], classes: list[str],
    outputs: dict[str, list[int]], seed: int = 0, progress: Progress | None = None, use_shap: bool = True,
) -> dict[str, Any]:
    """Metadata SHAP over many cases, reduced to what the page plots.

    `use_shap=False` computes the same exact values by enumeration (`exact_shapley`), skipping
    shap's numba compilation (about 20 s): for tests and quick looks.

    Stored: mean |SHAP| per field and output; mean SHAP per field value (e.g. site=acral) with
    counts; and, for the beeswarm, each field's (SHAP, value) pairs shuffled independently per
    field, so no patient's record can be reassembled from the file.
    """
    explainer = _shap_exact(game) if use_shap else None
    cases = []
    for i, (feat, record) in enumerate(zip(features, records)):
        cases.append(case_metadata_shap(game, feat, *record, classes=classes, explainer=explainer))
        if progress and (i % 25 == 0 or i == len(records) - 1):
            progress((i + 1) / len(records))
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n": len(cases), "fields": list(FIELDS), "outputs": {}}
    for name, idx in outputs.items():
        values = np.stack([c.for_output(idx)[0] for c in cases])  # (cases, fields)
        entry: dict[str, Any] = {
            "mean_abs": {f: float(np.abs(values[:, j]).mean()) for j, f in enumerate(FIELDS)},
            "base_mean": float(np.mean([c.for_output(idx)[1] for c in cases])),
            "beeswarm": {}, "by_value": {},
        }
        for j, field in enumerate(FIELDS):
            labels = np.array([_value_label(field, c.given[field]) for c in cases], dtype=object)
            order = rng.permutation(len(cases))
            entry["beeswarm"][field] = {"shap": values[order, j].round(5).tolist(), "value": labels[order].tolist()}
            frame = pd.DataFrame({"value": labels, "shap": values[:, j]})
            stats = frame.groupby("value")["shap"].agg(["count", "mean"]).reset_index()
            entry["by_value"][field] = stats.rename(columns={"count": "n", "mean": "mean_shap"}).to_dict("records")
        out["outputs"][name] = entry
    return out


# -- SHAP for the image -------------------------------------------------------------------
@dataclass
class ImageShap:
    """A SHAP map per explained class over the model-input-sized image.

    `seconds` is the whole wait, from `start` (the click) to the maps, setup included;
    `setup_seconds` the part before the first sample (importing shap, building the explainer).
    """

    classes: list[int]
    maps: np.ndarray  # (len(classes), H, W): summed over colour channels; > 0 pushes towards the class
    samples: int  # expected-gradient samples per class actually used
    seconds: float
    stopped_by_budget: bool
    setup_seconds: float = 0.0

    def summary(self, budget: float) -> str:
        """One honest line: samples, the whole wait against the budget, and why it stopped or overran."""
        text = (f"{self.samples} samples per class in {self.seconds:.1f} s of a {budget:g} s budget "
                f"({self.setup_seconds:.1f} s of it loading SHAP and building the explainer)")
        if self.seconds > budget:
            return text + ": over the budget, because the setup and the first step always run."
        if self.stopped_by_budget:
            return text + ": stopped by the budget; raise it for a less noisy map."
        return text + "."


#: A step may run this much slower per sample than the slowest step before it (the CPU is shared
#: with other sessions) before the budget is overrun.
STEP_SLACK = 1.5


def _next_step(done: int, max_samples: int, first: int, chunk: int, left: float, per_sample: float) -> int:
    """Samples to draw next: `first` to begin with (always), then as many as fit in `left`
    seconds at the slowest per-sample time seen so far, at most `chunk`; 0 means stop."""
    if done == 0:
        return min(first, max_samples)
    fit = chunk if per_sample <= 0 else int(left / (per_sample * STEP_SLACK))
    return max(0, min(chunk, max_samples - done, fit))


def budgeted_mean(
    step: Callable[[int, int], np.ndarray],
    max_samples: int,
    time_budget: float,
    start: float,
    chunk: int = 8,
    first: int = 2,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[np.ndarray, int]:
    """The sample-weighted mean of `step(n, index)` estimates (each the mean of n samples), drawn
    in steps until `max_samples` or until the next step would not fit in `time_budget` seconds
    counted from `start`.

    Why small, sized steps: the first step always runs (a map needs one), and a fixed first step
    of 8 samples per class took 4-13 s on a shared 2-core CPU, where one step's time varies
    several-fold. Here the first step is small, and each later step is sized from the slowest
    per-sample time so far with `STEP_SLACK` to spare, so an overrun needs a step over 1.5 times
    slower per sample than any before it. Returns (mean, samples drawn).
    """
    if max_samples < 1 or time_budget <= 0:
        raise InputError("The number of samples and the time budget must be positive.")
    total, done, per_sample, index = None, 0, 0.0, 0
    while True:
        n = _next_step(done, max_samples, first, chunk, time_budget - (clock() - start), per_sample)
        if n == 0:
            return total / done, done
        t0 = clock()
        estimate = step(n, index) * n
        per_sample = max(per_sample, (clock() - t0) / n)
        total = estimate if total is None else total + estimate
        done, index = done + n, index + 1
        if progress:
            progress(min(1.0, max(done / max_samples, (clock() - start) / time_budget)))


class _Probabilities(nn.Module):
    """image -> the chosen classes' calibrated probabilities, one case's metadata bound (what SHAP explains)."""

    def __init__(self, model: FusionNet, meta: torch.Tensor | None, calibration: Calibration | None,
                 classes: list[int]) -> None:
        super().__init__()
        from core.explain.heatmap import MetadataBound

        self.bound = MetadataBound(model, meta)
        self.calibration = calibration or Calibration.identity(model.num_classes)
        self.classes = list(classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.calibration.torch_probs(self.bound(image))[:, self.classes]


def blurred_baselines(image: torch.Tensor, sigmas: tuple[float, ...] = (3.0, 6.0, 12.0, 24.0)) -> torch.Tensor:
    """Blurred copies of the image: the "absence of detail" SHAP compares the image with.

    Needs no dataset (the page works on a fresh machine) and keeps the lesion's overall colour,
    so the map shows which structures matter rather than that the lesion is brown. The blur runs
    as two 1-D passes: the same result as one 2-D kernel, but a 145x145 kernel (sigma 24) took
    6 s of a SHAP time budget, the two passes about 0.1 s.
    """
    from torchvision.transforms.v2.functional import gaussian_blur

    out = []
    for sigma in sigmas:
        k = int(2 * round(3 * sigma) + 1)
        k = min(k, 2 * ((min(image.shape[-2:]) - 1) // 2) + 1)
        rows = gaussian_blur(image, [k, 1], [sigma, sigma])
        out.append(gaussian_blur(rows, [1, k], [sigma, sigma]))
    return torch.stack(out)


def image_shap(
    model: FusionNet,
    image: torch.Tensor,
    meta: torch.Tensor | None,
    classes: list[int],
    calibration: Calibration | None = None,
    max_samples: int = 64,
    time_budget: float = 12.0,
    chunk: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
    start: float | None = None,
) -> ImageShap:
    """Expected-gradients SHAP (shap's GradientExplainer) of each class's probability w.r.t. the image.

    The budget covers the whole wait from `start` (the caller's click; now if None): importing
    shap, building the explainer, then samples in steps (`budgeted_mean`) until `max_samples`
    or the budget, so a slow machine gets a noisier map, never a hang. The first step always
    runs, so a budget smaller than the setup plus one small step is overrun, and `seconds` says
    by how much. Red (> 0): pushes towards the class. `clock` is injectable for exact tests.
    """
    start = clock() if start is None else start
    if image.ndim != 3:
        raise InputError("Pass one preprocessed image (3, H, W).")
    if not classes:
        raise InputError("Choose at least one class to explain.")
    import shap

    wrapper = _Probabilities(model, meta, calibration, classes).eval()
    explainer = shap.GradientExplainer(wrapper, blurred_baselines(image), batch_size=chunk)
    x = image.unsqueeze(0)
    setup = clock() - start

    def step(n: int, index: int) -> np.ndarray:
        with model_slot():  # one step at a time holds the server's model slot, so Diagnose pages interleave
            values = np.asarray(explainer.shap_values(x, nsamples=n, rseed=seed + index))  # (1, 3, H, W, k)
        return np.moveaxis(values[0], -1, 0)  # (k, 3, H, W)

    state = np.random.get_state()  # shap seeds numpy's global generator; leave it as we found it
    try:
        mean, done = budgeted_mean(step, max_samples, time_budget, start, chunk, progress=progress, clock=clock)
    finally:
        np.random.set_state(state)
    maps = mean.sum(axis=1).astype(np.float32)
    return ImageShap(list(classes), maps, done, clock() - start, done < max_samples, setup)


def model_pixels(image_tensor: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """Undo the eval transform's normalisation: (3, H, W) tensor -> (H, W, 3) uint8 model-input pixels."""
    pixels = image_tensor * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# -- CAM faithfulness ---------------------------------------------------------------------
def cam_faithfulness(
    model: FusionNet, image: torch.Tensor, meta: torch.Tensor | None, target_class: int,
    methods: list[str], percentiles: tuple[int, ...] = (20, 40, 60, 80),
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Each CAM method's map and pytorch-grad-cam's own faithfulness scores for it.

    ROAD combined (Rong et al. 2022: remove the least relevant pixels minus remove the most
    relevant, averaged over `percentiles`; higher is more faithful) and the change in the
    target's probability when the image is multiplied by the CAM (higher: the highlighted
    region alone keeps the prediction).
    """
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from core.explain.heatmap import MetadataBound, compute_cam

    bound = MetadataBound(model, meta).eval()
    batch = image.unsqueeze(0)
    targets = [ClassifierOutputSoftmaxTarget(int(target_class))]
    cams, rows = {}, []
    for method in methods:
        t0 = time.perf_counter()
        cam = compute_cam(model, image, meta, target_class, method)
        seconds = time.perf_counter() - t0
        cams[method] = cam
        with model_slot():
            road = float(ROADCombined(percentiles=list(percentiles))(batch, cam[None], targets, bound)[0])
            change = float(CamMultImageConfidenceChange()(batch, cam[None], targets, bound)[0])
        rows.append({"method": method, "road_combined": road, "confidence_change": change,
                     "seconds": round(seconds, 2)})
    return cams, pd.DataFrame(rows)


# -- stored global results ----------------------------------------------------------------
def read_explanations(bundle_dir: Path | str) -> dict[str, Any] | None:
    """The stored global explanations, or None if the command has not been run for this bundle.

    Raises InputError if the file belongs to other weights (the sha256 differs), so the page
    never shows one model's explanations for another.
    """
    path = Path(bundle_dir) / EXPLANATIONS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}).") from None
    card = read_card(bundle_dir)
    if data.get("sha256") != card["sha256"]:
        raise InputError(f"{path} was computed for other weights; rerun `python -m core.explain.importance --bundle {bundle_dir}`.")
    return data


def output_groups(card: dict[str, Any]) -> dict[str, list[int]]:
    """The outputs the page explains: melanoma, malignant (the sum) and each class."""
    classes = card["classes"]
    groups = {"melanoma": [classes.index(card["melanoma"])],
              "malignant": [classes.index(c) for c in card["malignant"]]}
    groups.update({c: [i] for i, c in enumerate(classes)})
    return groups


def compute_global(
    model: FusionNet, card: dict[str, Any], frame: pd.DataFrame, images: list[np.ndarray],
    n_repeats: int = 5, shap_rows: int = 500, seed: int = 0, progress: Stage | None = None, use_shap: bool = True,
) -> dict[str, Any]:
    """Permutation importance and metadata SHAP on one split (usually validation).

    `progress(fraction, stage)` names each stage, so a progress bar can say what it waits for.
    """
    stage = progress or (lambda fraction, what: None)
    stage(0.0, "extracting image features")
    known = eval_dataset(card, frame, images)
    feats, meta, labels = extract(model, known, flip_average(card))
    feats_np, meta_np = feats.numpy(), meta.numpy()
    encoder = MetadataEncoder.from_dict(card["metadata"])
    calibration = Calibration.from_card(card)
    mel = card["classes"].index(card["melanoma"])
    groups = feature_groups(encoder.feature_names) if model.meta is not None else {}
    perm = permutation_importance(head_predictor(model, calibration), feats_np, meta_np, labels, groups, mel,
                                  n_repeats, seed, lambda f: stage(f, "permutation importance"),
                                  lesions=frame["group_id"].to_numpy(), decide=calibration.suggest)
    result: dict[str, Any] = {
        "sha256": card["sha256"], "model": card.get("name"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_images": int(len(labels)), "n_lesions": int(frame["group_id"].nunique()),
        "permutation": {"n_repeats": n_repeats, "rows": perm.to_dict("records")},
    }
    if model.meta is not None:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.permutation(len(labels))[:shap_rows])
        records = [(None if frame["age_missing"].iloc[i] else frame["age"].iloc[i], frame["sex"].iloc[i],
                    frame["site"].iloc[i]) for i in pick]
        game = MetadataGame(model, encoder, calibration)
        stage(0.0, "metadata SHAP")
        result["shap"] = global_metadata_shap(game, feats_np[pick], records, card["classes"], output_groups(card), seed,
                                              lambda f: stage(f, "metadata SHAP"), use_shap)
        result["shap"]["method"] = "shap.explainers.Exact" if use_shap else "exact enumeration"
    return result


def explain_split(
    model: FusionNet, card: dict[str, Any], data: Path, split_file: Path, split: str = "val",
    limit: int | None = None, progress: Stage | None = None, **kwargs: Any,
) -> dict[str, Any]:
    """`compute_global` on one split of the HAM10000 folder `data`, as the command and the page run it."""
    from core.data.datasets import prepare_for_card, subset

    if progress:
        progress(0.0, "reading the dataset")
    frame, images, _ = prepare_for_card(card, data, split_file)
    frame, images = subset(frame, images, frame["split"] == split)
    if limit:
        frame, images = frame.iloc[:limit].reset_index(drop=True), images[:limit]
    return {**compute_global(model, card, frame, images, progress=progress, **kwargs), "split": split}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--repeats", type=int, default=5, help="shuffles per feature for permutation importance")
    parser.add_argument("--shap-rows", type=int, default=500, help="cases explained for the metadata SHAP summary")
    parser.add_argument("--limit", type=int, help="use only the first n images of the split (smoke tests)")
    parser.add_argument("--out", type=Path, help=f"default: <bundle>/{EXPLANATIONS_FILE}")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, card = load_bundle(args.bundle)
        result = explain_split(model, card, args.data, args.split_file, args.split, args.limit,
                               n_repeats=args.repeats, shap_rows=args.shap_rows)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    out = args.out or args.bundle / EXPLANATIONS_FILE
    out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("Wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
