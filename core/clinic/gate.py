"""The input gate: is this a dermoscopic image of a skin lesion at all?

A distance from the training images (core.clinic.ood) only knows the training images, so it has to
guess where "unlike them" starts: it let an inbox screenshot through and stopped real vascular
lesions. The gate also learns what dermoscopy is *not*: a logistic regression on the
standardised backbone features of the prediction's own forward pass plus a few colour and
texture statistics of the decoded image, fitted with HAM10000 training-split images as
positives and the generated non-dermoscopy images of core.clinic.gate_negatives as negatives.

Its threshold is set on the validation split only (real lesions the fit has not seen): the
lowest at which no diagnosis, however rare, has more than `max_rate` of its images flagged
there. An image above it is graded "not a dermoscopic image" and its result is
withheld (core.clinic.quality).

    python -m core.clinic.gate --bundle weights/fusion-lite0

fits the gate for a bundle's own features and writes it into the card under "gate"
(`bench/bench_gate.py` measures it on held-out negatives and the test split).
"""
from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from core.clinic.ood import ENCODING, pack_array, per_class_quantile, unpack_array
from core.config import DEFAULT_DATA_DIR, DEFAULT_MODEL, SPLITS_DIR, WEIGHTS_DIR
from core.data.transforms import card_transform
from core.errors import InputError
from core.model.bundle import load_bundle, read_card, write_card
from core.model.networks import FusionNet, image_features

log = logging.getLogger(__name__)

#: Image statistics (here and in core.clinic.quality) are measured on the image scaled to this shorter
#: side (the training images' 150 px), so they do not depend on the camera's resolution.
ANALYSIS_SIDE = 150

#: The colour and texture statistics, in the order the gate's coefficients expect them.
STATISTICS: tuple[str, ...] = (
    "chroma mean", "chroma std", "L mean", "a mean", "b mean", "L std", "a std", "b std",
    "hue concentration", "grey share", "white share", "black share", "flat share", "edge share",
    "log sharpness", "distinct colours", "colour entropy", "clipped share", "top colour share",
    "centre minus border", "corners minus centre",
)


# -- colour and texture statistics --------------------------------------------------------
def at_analysis_size(image: np.ndarray) -> np.ndarray:
    """`image` (grey or colour) scaled to ANALYSIS_SIDE on its shorter side."""
    scale = ANALYSIS_SIDE / min(image.shape[:2])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _quantised_shares(rgb: np.ndarray, bits: int) -> np.ndarray:
    """Share of the pixels in each occupied colour bin (`bits` per channel)."""
    q = (rgb >> (8 - bits)).astype(np.int32)
    codes = (q[..., 0] << (2 * bits)) | (q[..., 1] << bits) | q[..., 2]
    counts = np.bincount(codes.ravel())
    return counts[counts > 0] / codes.size


def _regions(lightness: np.ndarray) -> tuple[float, float, float]:
    """Mean lightness of the centre, the border ring and the four corners: a dermatoscope's
    field is a lesion in the middle and, often, a dark vignette at the corners."""
    h, w = lightness.shape
    centre = lightness[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean()
    ring = np.ones_like(lightness, bool)
    ring[h // 8: 7 * h // 8, w // 8: 7 * w // 8] = False
    ch, cw = max(1, h // 8), max(1, w // 8)
    corners = np.concatenate([lightness[:ch, :cw].ravel(), lightness[:ch, -cw:].ravel(),
                              lightness[-ch:, :cw].ravel(), lightness[-ch:, -cw:].ravel()])
    return float(centre), float(lightness[ring].mean()), float(corners.mean())


def _colour_statistics(small: np.ndarray) -> list[float]:
    """Chroma, Lab means and spreads, how concentrated the hues are, grey / white / black shares."""
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64) / 255
    wide = small.astype(np.int16)
    chroma = (wide.max(axis=2) - wide.min(axis=2)) / 255
    hue = cv2.cvtColor(small, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(np.float64) * (2 * np.pi / 256)
    weight = chroma / max(chroma.sum(), 1e-9)
    return [
        chroma.mean(), chroma.std(), *lab.reshape(-1, 3).mean(axis=0), *lab.reshape(-1, 3).std(axis=0),
        np.hypot((weight * np.cos(hue)).sum(), (weight * np.sin(hue)).sum()),
        (chroma < 0.04).mean(), (lab[..., 0] > 0.94).mean(), (lab[..., 0] < 0.08).mean(),
    ]


def _texture_statistics(small: np.ndarray) -> list[float]:
    """Flat and edge shares, sharpness, how many colours and how evenly used, clipping."""
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_64F, 1, 0), cv2.Sobel(grey, cv2.CV_64F, 0, 1))
    shares = _quantised_shares(small, 4)
    return [
        (gradient < 4).mean(), (cv2.Canny(grey, 100, 200) > 0).mean(),
        np.log1p(cv2.Laplacian(grey, cv2.CV_64F).var()) / 10,
        np.log(len(_quantised_shares(small, 5))) / np.log(grey.size),
        -(shares * np.log(shares)).sum() / np.log(4096),
        ((small == 0) | (small == 255)).any(axis=2).mean(), shares.max(),
    ]


def image_statistics(rgb: np.ndarray) -> np.ndarray:
    """The STATISTICS of one decoded (H, W, 3) uint8 image, each roughly on a 0-1 scale.

    What they catch that the backbone may not: flat backgrounds and few colours (screenshots,
    cards), no colour (documents, scans), hard edges (text), and the dermatoscope's framing.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"Expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}.")
    small = at_analysis_size(rgb)
    lightness = cv2.cvtColor(small, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float64) / 255
    centre, ring, corners = _regions(lightness)
    return np.array([*_colour_statistics(small), *_texture_statistics(small), centre - ring, corners - centre])


# -- the classifier -----------------------------------------------------------------------
def design(features: np.ndarray, statistics: np.ndarray) -> np.ndarray:
    """The gate's input rows: backbone features (n, D) beside image statistics (n, S)."""
    features, statistics = np.atleast_2d(features), np.atleast_2d(statistics)
    if len(features) != len(statistics) or statistics.shape[1] != len(STATISTICS):
        raise InputError(f"Gate inputs disagree: features {features.shape}, statistics {statistics.shape}.")
    return np.hstack([features, statistics]).astype(np.float64)


@dataclass
class Gate:
    """Logistic regression on standardised inputs; `score` is the probability of *not* dermoscopy."""

    mean: np.ndarray  # (D + S,)
    scale: np.ndarray  # (D + S,)
    coef: np.ndarray  # (D + S,)
    intercept: float
    threshold: float = 0.5

    @classmethod
    def fit(cls, positives: np.ndarray, negatives: np.ndarray, c: float = 0.05) -> "Gate":
        """Fit on design rows of dermoscopic (positives) and non-dermoscopic (negatives) images.

        Both sides weigh the same in total (balanced), so the fit does not depend on how many
        negatives were generated; a small `c` (strong L2) keeps the boundary smooth, since the
        negatives only sample what an upload might be.
        """
        x = np.vstack([positives, negatives])
        y = np.r_[np.zeros(len(positives)), np.ones(len(negatives))]
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        model.fit((x - mean) / scale, y)
        return cls(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))

    @property
    def n_features(self) -> int:
        """How many backbone features the gate expects (the statistics come after them)."""
        return len(self.mean) - len(STATISTICS)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """P(not dermoscopy) for design rows (n, D + S)."""
        rows = np.atleast_2d(rows)
        if rows.shape[1] != len(self.mean):
            raise InputError(
                f"The gate expects {self.n_features} image features, the model gives {rows.shape[1] - len(STATISTICS)}."
            )
        z = ((rows - self.mean) / self.scale) @ self.coef + self.intercept
        return 1 / (1 + np.exp(-np.clip(z, -50, 50)))

    def score_image(self, features: np.ndarray, rgb: np.ndarray) -> float:
        """P(not dermoscopy) for one image: its pooled features (D,) and the decoded image."""
        return float(self.score(design(features, image_statistics(rgb)))[0])

    def to_dict(self, how: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "method": "logistic regression on standardised pooled image features + colour/texture statistics",
            "how": how,
            "encoding": ENCODING,
            "statistics": list(STATISTICS),
            "threshold": self.threshold,
            "intercept": self.intercept,
            "mean": pack_array(self.mean),
            "scale": pack_array(self.scale),
            "coef": pack_array(self.coef),
            **(extra or {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Gate":
        if data.get("statistics") != list(STATISTICS):
            raise InputError("The model card's gate was fitted on other image statistics: re-run python -m core.clinic.gate.")
        try:
            return cls(unpack_array(data["mean"]), unpack_array(data["scale"]), unpack_array(data["coef"]),
                       float(data["intercept"]), float(data["threshold"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError(f"The model card's 'gate' section is unreadable ({exc.__class__.__name__}).") from None


def choose_threshold(scores: np.ndarray, labels: np.ndarray, max_rate: float, floor: float = 0.5) -> float:
    """The lowest threshold at which no class of real lesions has more than `max_rate` flagged
    (core.clinic.ood.per_class_quantile), and at least `floor`: the gate never flags an image it thinks
    more likely dermoscopic than not."""
    return max(floor, per_class_quantile(scores, labels, max_rate))


def flag_rates(scores: np.ndarray, groups: Iterable[str], threshold: float) -> dict[str, float]:
    """Share of images above `threshold` per group (class or negatives family)."""
    frame = pd.DataFrame({"group": list(groups), "flagged": np.asarray(scores) > threshold})
    return {str(k): float(v) for k, v in frame.groupby("group", sort=False)["flagged"].mean().items()}


# -- features for the fit and the benchmark -----------------------------------------------
@torch.no_grad()
def rgb_design(model: FusionNet, card: dict[str, Any], rgbs: Iterable[np.ndarray], batch_size: int = 32,
               total: int | None = None) -> np.ndarray:
    """Design rows for decoded images, through the card's eval transform and flip setting: the
    same features `Predictor.forward` gives, for images that have no HAM10000 row."""
    transform = card_transform(card)
    flip = bool(card["input"].get("flip_average", False))
    model.eval()
    rows, batch = [], []

    def flush() -> None:
        x = torch.stack([transform(torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)) for rgb in batch])
        rows.append(design(image_features(model, x, flip).double().numpy(), np.stack([image_statistics(r) for r in batch])))
        batch.clear()

    for rgb in tqdm(rgbs, total=total, desc="images", leave=False):
        batch.append(rgb)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return np.vstack(rows)


def ham_design(model: FusionNet, card: dict[str, Any], frame: pd.DataFrame, images: list[np.ndarray]) -> np.ndarray:
    """Design rows for HAM10000 images through the evaluation pipeline (core.model.evaluate.extract)."""
    from core.model.evaluate import eval_dataset, extract, flip_average

    features = extract(model, eval_dataset(card, frame, images), flip_average(card))[0].double().numpy()
    return design(features, np.stack([image_statistics(rgb) for rgb in images]))


def negatives_design(model: FusionNet, card: dict[str, Any], split: str, per_family: int,
                     families: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Design rows and family names of `per_family` generated negatives of each family."""
    from core.clinic.gate_negatives import FAMILIES, negatives

    names = list(families or FAMILIES)
    pairs = negatives(split, per_family, names)
    return rgb_design(model, card, (rgb for _, rgb in pairs), total=per_family * len(names)), \
        [f for f in names for _ in range(per_family)]


def capped_sample(frame: pd.DataFrame, per_class: int, seed: int) -> np.ndarray:
    """Row mask keeping at most `per_class` random images of each diagnosis: enough of the common
    classes, and every image of the rare ones, for a fit that does not forget them."""
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(frame), bool)
    for _, rows in frame.groupby("dx"):
        idx = rows.index.to_numpy()
        keep[rng.permutation(idx)[:per_class] if len(idx) > per_class else idx] = True
    return keep


# -- command line -------------------------------------------------------------------------
def ham_for_card(card: dict[str, Any], args: argparse.Namespace) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """HAM10000 on the split the card's model was trained with (another split is refused), or,
    with `--limit`, a stratified sample of it decoded in a second (a quick check)."""
    from core.data.datasets import prepare, prepare_for_card

    if args.limit:
        return prepare(args.data, args.split_file, card["training"]["seed"], limit=args.limit)[:2]
    return prepare_for_card(card, args.data, args.split_file)[:2]


def fit_for_bundle(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Fit the gate for one bundle: the weights' sha256 it was fitted for, and its card section."""
    from core.data.datasets import subset

    model, card = load_bundle(args.bundle)
    seed = card["training"]["seed"]
    frame, images = ham_for_card(card, args)
    train = (frame["split"] == "train").to_numpy()
    train_frame, train_images = subset(frame, images, train & capped_sample(frame, args.per_class, seed))
    val_frame, val_images = subset(frame, images, (frame["split"] == "val").to_numpy())
    log.info("features: %d training-split lesions, %d validation-split lesions, %d negatives per family",
             len(train_frame), len(val_frame), args.negatives)
    positives = ham_design(model, card, train_frame, train_images)
    val = ham_design(model, card, val_frame, val_images)
    negatives, families = negatives_design(model, card, "fit", args.negatives)

    gate = Gate.fit(positives, negatives, args.c)
    gate.threshold = choose_threshold(gate.score(val), val_frame["dx"].to_numpy(), args.max_rate)
    val_rates = flag_rates(gate.score(val), val_frame["dx"], gate.threshold)
    log.info("threshold %.4f; validation lesions flagged per class: %s", gate.threshold,
             ", ".join(f"{k} {v:.1%}" for k, v in sorted(val_rates.items())))
    log.info("fitted negatives flagged (not held out): %s", ", ".join(
        f"{k} {v:.0%}" for k, v in flag_rates(gate.score(negatives), families, gate.threshold).items()))
    how = (
        f"fitted on {len(positives)} training-split images (at most {args.per_class} per class) and "
        f"{len(negatives)} generated negatives (core.clinic.gate_negatives, split 'fit', {args.negatives} per family), "
        f"C={args.c}; threshold = the largest per-class {1 - args.max_rate:.1%} quantile of the "
        f"{len(val)} validation-split images' scores (at least 0.5)"
    )
    extra = {
        "parameters": {"per_class": args.per_class, "negatives_per_family": args.negatives, "c": args.c,
                       "max_rate": args.max_rate},
        "validation_flag_rate": val_rates,
        "negative_families": dict(Counter(families)),
    }
    return card["sha256"], gate.to_dict(how, extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=WEIGHTS_DIR / DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR / "ham10000")
    parser.add_argument("--split-file", type=Path, default=SPLITS_DIR / "ham10000.csv")
    parser.add_argument("--per-class", type=int, default=600, help="at most this many training images per class")
    parser.add_argument("--negatives", type=int, default=150, help="generated negatives per family")
    parser.add_argument("--c", type=float, default=0.05, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--max-rate", type=float, default=0.005,
                        help="largest share of any class's validation images the gate may flag")
    parser.add_argument("--limit", type=int, default=0,
                        help="a stratified sample of this many HAM10000 images (a quick check)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    torch.set_num_threads(args.threads)
    sha256, section = fit_for_bundle(args)
    card = read_card(args.bundle)  # re-read: another step may have rewritten the card meanwhile
    if card["sha256"] != sha256:
        raise InputError(f"The weights in {args.bundle} changed while the gate was fitted: run it again.")
    card["gate"] = section
    write_card(card, args.bundle)
    log.info("gate written to %s", args.bundle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
