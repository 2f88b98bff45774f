"""Decoding user-supplied images safely: any of PIL image, numpy array, bytes or path -> RGB PIL.

Refuses, with an InputError a person can read: unreadable or non-image files, empty files,
decompression bombs (checked from the header, before any pixel is decoded), images too small
to judge, and 16-bit images. Converts greyscale, RGBA, palette and CMYK images to RGB, and
applies the EXIF orientation.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InputError

ImageLike = Union[Image.Image, np.ndarray, bytes, bytearray, str, Path]

MAX_PIXELS = 50_000_000  # a 8000x6000 photo; larger images are refused before decoding
MIN_SIDE = 32
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _check_header(img: Image.Image) -> None:
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise InputError(
            f"The image declares {width} x {height} pixels, more than the {MAX_PIXELS // 1_000_000} megapixels "
            "accepted. Please upload a smaller export of the image."
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(f"The image is only {width} x {height} pixels; at least {MIN_SIDE} x {MIN_SIDE} is needed.")
    if img.mode in HIGH_BIT_MODES:
        raise InputError(
            f"This is a {img.mode} (high bit-depth or floating-point) image. Please export it as an 8-bit RGB JPEG or PNG."
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _open(source: io.BytesIO | Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            _check_header(img)
            img.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("The image declares an enormous size (a possible decompression bomb) and was refused.") from None
    except UnidentifiedImageError:
        raise InputError("This file is not an image that can be read (JPEG, PNG, BMP, TIFF or WebP expected).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"The image file is damaged or truncated and cannot be decoded ({exc.__class__.__name__}).") from None
    return img


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise InputError(f"Image arrays must be 8-bit (uint8); got {array.dtype}.")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        img = Image.fromarray(array.squeeze(2) if array.ndim == 3 and array.shape[2] == 1 else array)
        _check_header(img)
        return img
    raise InputError(f"Image arrays must be HxW, HxWx3 or HxWx4; got shape {array.shape}.")


def load_rgb(image: ImageLike) -> Image.Image:
    """Any supported image input -> an RGB PIL image, or InputError."""
    if isinstance(image, Image.Image):
        _check_header(image)
        img = image
    elif isinstance(image, np.ndarray):
        img = _from_array(image)
    elif isinstance(image, (bytes, bytearray)):
        if not image:
            raise InputError("The uploaded file is empty.")
        img = _open(io.BytesIO(image))
    elif isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InputError(f"No such image file: {path}")
        if path.stat().st_size == 0:
            raise InputError(f"The file {path.name} is empty.")
        img = _open(path)
    else:
        raise InputError(f"Unsupported image input of type {type(image).__name__}.")
    return _to_rgb(img)
