"""Image transforms: the training augmentations and the one eval transform.

The eval transform is built from the model card's input spec (size, mean, std), so evaluation
and the app preprocess exactly as training did. Both take a uint8 CxHxW tensor.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2

#: Aspect ratios within 2% of the model's are resized as they are (HAM10000's 600x450 is exact).
ASPECT_TOLERANCE = 1.02
FITS = ("pad", "stretch")


def _transpose(image: torch.Tensor) -> torch.Tensor:
    """Swap height and width (the papers' Transpose); dermoscopy has no canonical orientation."""
    return image.transpose(-2, -1)


def _to_landscape(image: torch.Tensor) -> torch.Tensor:
    """Turn portrait images sideways so every image reaches the model in the training orientation."""
    return _transpose(image) if image.shape[-2] > image.shape[-1] else image


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """The papers' augmentations, plus random crop, colour jitter and random greyscale, on the
    image as the eval transform frames it (`fit_to_input`: landscape, padded to the model's aspect
    ratio), so training and evaluation see one geometry (a square model is never shown a squashed
    or cropped-to-square 4:3 image in one and not the other).

    vertical/horizontal flip, rotate; brightness/contrast 0.2; Gaussian blur (kernel 5, p 0.25);
    shift-scale-rotate (0.1, 0.1, 15 degrees, p 0.85); random resized crop of 35-100% of the area
    at the input's aspect ratio +-15% (so a centre crop or a closer view looks like training
    data); colour jitter; greyscale (p 0.05).

    The papers' transpose is left out: it turns a 4:3 image portrait, where no crop of the
    landscape ratio fits, and torchvision then falls back to one fixed, stretched centre crop.
    """
    height, width = size
    aspect = width / height
    return v2.Compose(
        [
            *fit_to_input(size),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply(
                [v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1))], p=0.85
            ),
            v2.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(aspect * 0.85, aspect / 0.85), antialias=True),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.15, hue=0.02),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=0.25),
            v2.RandomGrayscale(p=0.05),
            *_normalise(mean, std),
        ]
    )


def content_box(height: int, width: int, size: Sequence[int]) -> tuple[float, float, float, float]:
    """Where a (landscape) height x width image sits in the model's input frame after `fit_aspect`:
    (top, bottom, left, right) as fractions of the frame's height and width."""
    frame_h, frame_w = size
    aspect, own = frame_w / frame_h, width / height
    if own > aspect * ASPECT_TOLERANCE:  # wider: bands above and below
        share = aspect / own
        return (1 - share) / 2, (1 + share) / 2, 0.0, 1.0
    if own < aspect / ASPECT_TOLERANCE:  # narrower (e.g. square): bands left and right
        share = own / aspect
        return 0.0, 1.0, (1 - share) / 2, (1 + share) / 2
    return 0.0, 1.0, 0.0, 1.0


def _fit_aspect(size: Sequence[int]) -> v2.Lambda:
    """Pad (black) an image whose aspect ratio differs from the model's, instead of stretching it.

    A square centre crop squashed to 4:3 is a shape the model never saw in training (measured:
    0.672 balanced accuracy squashed, 0.694 padded, on 224x224 crops).
    """

    def fit(image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        top, bottom, left, right = content_box(height, width, size)
        if (top, bottom, left, right) == (0.0, 1.0, 0.0, 1.0):
            return image
        full_h, full_w = round(height / (bottom - top)), round(width / (right - left))
        pad_h, pad_w = max(0, full_h - height), max(0, full_w - width)
        return v2.functional.pad(image, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)

    return v2.Lambda(fit)


def fit_to_input(size: Sequence[int]) -> list[v2.Transform]:
    """The geometry every image gets before anything else, in training and evaluation alike:
    portrait turned landscape, then padded to the aspect ratio of `size`."""
    return [v2.Lambda(_to_landscape), _fit_aspect(size)]


def eval_transform(size: Sequence[int], mean: Sequence[float], std: Sequence[float], fit: str = "pad") -> v2.Compose:
    """Whole field of view, portrait turned landscape, resized to the card's input size.

    `fit="pad"` first pads an image of another aspect ratio to the card's (never stretched);
    `fit="stretch"` resizes it as it is (what bundles trained before padding existed were
    evaluated with: their cards carry no "fit").
    """
    if fit not in FITS:
        raise ValueError(f"Unknown fit {fit!r}; choose from {', '.join(FITS)}.")
    steps = fit_to_input(size) if fit == "pad" else [v2.Lambda(_to_landscape)]
    return v2.Compose([*steps, v2.Resize(tuple(size), antialias=True), *_normalise(mean, std)])


def card_transform(card: dict) -> v2.Compose:
    """The one eval transform of a bundle, from its card's input spec (evaluation and the app)."""
    spec = card["input"]
    return eval_transform(spec["size"], spec["mean"], spec["std"], spec.get("fit", "stretch"))
