"""Image transforms: the training augmentations and the one eval transform.

The eval transform is built from the model card's input spec (size, mean, std), so evaluation
and the app preprocess exactly as training did. Both take a uint8 CxHxW tensor.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.transforms import v2


def _transpose(image: torch.Tensor) -> torch.Tensor:
    """Swap height and width (the papers' Transpose); dermoscopy has no canonical orientation."""
    return image.transpose(-2, -1)


def _to_landscape(image: torch.Tensor) -> torch.Tensor:
    """Turn portrait images sideways so every image reaches the model in the training orientation."""
    return _transpose(image) if image.shape[-2] > image.shape[-1] else image


def _normalise(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]


def train_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """The papers' augmentations, plus random crop, colour jitter and random greyscale.

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


def eval_transform(size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Whole field of view, portrait turned landscape, resized to the card's input size."""
    return v2.Compose(
        [v2.Lambda(_to_landscape), v2.Resize(tuple(size), antialias=True), *_normalise(mean, std)]
    )
