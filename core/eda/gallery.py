"""The second paper's transformation gallery, and a preview of the real training augmentations.

The paper's figure shows greyscale, Ben Graham's preprocessing without and with a Gaussian
blur, a hue/saturation/brightness adjustment and the LUV colour space. These are visual aids:
the model is not trained on them, so they live here, away from `core.data.transforms` (which
training and serving import and which stays free of OpenCV). The augmentation preview, by
contrast, calls `core.data.transforms.train_transform` itself, so what it shows is exactly what the
model saw during training.

All functions take and return HxWx3 (or HxW for greyscale) uint8 RGB arrays.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from core.errors import InputError

#: Ben Graham's local-average subtraction: 4 * (image - blurred image) + 128.
BEN_GRAHAM_SIGMA = 10.0


def _check(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"Expected an HxWx3 uint8 RGB image, got shape {image.shape} and type {image.dtype}.")
    return image


def greyscale(image: np.ndarray) -> np.ndarray:
    """Luminance only: texture and contrast without colour (the paper's "B&W")."""
    return cv2.cvtColor(_check(image), cv2.COLOR_RGB2GRAY)


def ben_graham(image: np.ndarray, smooth_sigma: float = 0.0, sigma: float = BEN_GRAHAM_SIGMA) -> np.ndarray:
    """Ben Graham's preprocessing on the greyscale image.

    Subtracting a heavily blurred copy (sigma ~10 px) removes uneven lighting and vignetting
    and amplifies local structure 4x around mid-grey. With `smooth_sigma` = 0 the fine,
    high-frequency noise is kept (the paper's "without Gaussian blur"); a small `smooth_sigma`
    (1-2 px) first smooths the image so the amplified detail is the lesion pattern, not noise
    (the paper's "with Gaussian blur").
    """
    grey = greyscale(image)
    if smooth_sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), smooth_sigma)
    background = cv2.GaussianBlur(grey, (0, 0), sigma)
    return cv2.addWeighted(grey, 4.0, background, -4.0, 128)


def adjust_hsb(image: np.ndarray, hue_shift: float = 0.0, saturation: float = 1.0,
               brightness: float = 1.0) -> np.ndarray:
    """Shift hue (degrees) and scale saturation and brightness: simulated lighting and skin tone."""
    # Float HSV (hue in degrees, saturation and value in 0-1): 8-bit HSV would quantise hue to 2 degrees.
    hsv = cv2.cvtColor(_check(image).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + hue_shift) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * brightness, 0, 1)
    return np.round(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0).astype(np.uint8)


def to_luv(image: np.ndarray) -> np.ndarray:
    """CIE L*u*v* channels shown as if they were R, G, B: a perceptually uniform colour space."""
    return cv2.cvtColor(_check(image), cv2.COLOR_RGB2LUV)


def paper_gallery(image: np.ndarray, hue_shift: float = 20.0, saturation: float = 1.3,
                  brightness: float = 1.1, smooth_sigma: float = 2.0) -> dict[str, np.ndarray]:
    """The five panels of the paper's transformation figure, titled, in the paper's order."""
    return {
        "Original": _check(image),
        "Greyscale": greyscale(image),
        "Ben Graham, without Gaussian blur": ben_graham(image),
        f"Ben Graham, with Gaussian blur (sigma {smooth_sigma:g})": ben_graham(image, smooth_sigma),
        "Hue / saturation / brightness": adjust_hsb(image, hue_shift, saturation, brightness),
        "LUV colour space": to_luv(image),
    }


def augmentation_preview(image: np.ndarray, n: int, size: Sequence[int], mean: Sequence[float],
                         std: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """`n` random draws of the training augmentation pipeline, un-normalised for display.

    `size`, `mean` and `std` should come from the model card, as in training. The random state
    is forked, so the preview is reproducible for a seed and leaves the global torch RNG alone.
    """
    import torch  # deferred: the rest of the gallery needs no torch

    from core.data.transforms import train_transform

    transform = train_transform((int(size[0]), int(size[1])), mean, std)
    tensor = torch.from_numpy(np.ascontiguousarray(_check(image))).permute(2, 0, 1)
    mean_t = torch.tensor(list(mean)).view(3, 1, 1)
    std_t = torch.tensor(list(std)).view(3, 1, 1)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n):
            normalised = transform(tensor)
            pixels = (normalised * std_t + mean_t).clamp(0, 1)
            out.append((pixels * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    return out
