"""Class activation heatmaps (pytorch-grad-cam) for the fusion model, and their overlays.

pytorch-grad-cam supports one-input models only, so `MetadataBound` wraps the loaded fusion
model with one case's metadata tensor bound: Grad-CAM sees `f(image) -> logits`. The CAM
is taken at the model's `cam_layer` (the last convolutional block) and follows the first
paper's steps: normalised to 0-1, rescaled to 0-255, Jet colour map, BGR -> RGB, and three
panels: original | heatmap | overlay.

Thread safety: the cached model is shared by every browser session. pytorch-grad-cam
registers forward hooks on the target layer, and a hook on the shared layer would also fire
for a prediction running in another thread (mixing that image's activations into this
CAM). So the CAM runs on a *shadow* of the model: new module objects that share the
weights' storage but have their own hooks and no gradients of their own. Every CAM runs
under one module-level lock, inside `with Method(...) as cam:` so the hooks are always
removed, even on error; and, like every model call, in one of the server's model slots
(core.model.concurrency), taken before the lock.
"""
from __future__ import annotations

import copy
import logging
import threading
import weakref
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from core.data.transforms import content_box
from core.model.concurrency import model_slot
from core.model.networks import FusionNet

log = logging.getLogger(__name__)

#: The CAM methods offered to the user (all from pytorch-grad-cam). EigenCAM is class-agnostic:
#: it shows the first principal component of the activations, whatever the target class.
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "Grad-CAM": GradCAM,
    "Grad-CAM++": GradCAMPlusPlus,
    "XGrad-CAM": XGradCAM,
    "LayerCAM": LayerCAM,
    "EigenCAM": EigenCAM,
}
CLASS_AGNOSTIC: frozenset[str] = frozenset({"EigenCAM"})
DEFAULT_METHOD = "Grad-CAM"

#: One CAM at a time per process: pytorch-grad-cam keeps per-call state on its hooks.
CAM_LOCK = threading.Lock()
_SHADOWS: "weakref.WeakKeyDictionary[FusionNet, FusionNet]" = weakref.WeakKeyDictionary()


class MetadataBound(nn.Module):
    """`image -> logits` with one case's metadata bound, the one-input model pytorch-grad-cam needs."""

    def __init__(self, model: FusionNet, meta: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("meta", None if meta is None else meta.reshape(1, -1).float(), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        meta = None if self.meta is None or self.model.meta is None else self.meta.expand(image.shape[0], -1)
        return self.model(image, meta)


def _shadow(model: FusionNet) -> FusionNet:
    """A structural copy of `model` sharing its weight storage, frozen, in eval mode (cached).

    Hooks registered on the shadow never fire for predictions on the shared model, and the
    backward pass writes no `.grad` into the shared parameters.
    """
    shadow = _SHADOWS.get(model)
    if shadow is None:
        memo: dict[int, object] = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
        memo.update({id(b): b for b in model.buffers()})
        shadow = copy.deepcopy(model, memo).eval()
        _SHADOWS[model] = shadow
    return shadow


def target_layer(model: nn.Module) -> nn.Module:
    """The module named by the model's `cam_layer` (its last convolutional block)."""
    return model.get_submodule(model.cam_layer)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (the paper's step); a constant map becomes all zeros."""
    cam = np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(cam.min()), float(cam.max())
    if high - low < 1e-12:
        return np.zeros_like(cam, dtype=np.float32)
    return (cam - low) / (high - low)


def compute_cam(
    model: FusionNet,
    image: torch.Tensor,
    meta: torch.Tensor | None,
    target_class: int,
    method: str = DEFAULT_METHOD,
) -> np.ndarray:
    """The CAM for one preprocessed image (3, H, W) and class index: a float32 (H, W) map in [0, 1]."""
    if method not in CAM_METHODS:
        raise ValueError(f"Unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}.")
    if not 0 <= target_class < model.num_classes:
        raise ValueError(f"Target class {target_class} is outside 0..{model.num_classes - 1}.")
    batch = (image.unsqueeze(0) if image.ndim == 3 else image).detach().clone()
    with model_slot(), CAM_LOCK:
        shadow = _shadow(model)
        wrapper = MetadataBound(shadow, meta).eval()
        # The shadow's weights need no gradient, so the input carries the graph to the target layer.
        batch.requires_grad_(True)
        with torch.enable_grad(), CAM_METHODS[method](model=wrapper, target_layers=[target_layer(shadow)]) as cam:
            grayscale = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(target_class))])
    return normalise(grayscale[0])


@torch.no_grad()
def grid_shape(model: FusionNet, input_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the CAM layer's activation grid for an input of `input_size` (H, W): the CAM's
    true resolution before it is smoothed up to the image (5x7 for EfficientNet-Lite0 at 150x200)."""
    seen: list[tuple[int, int]] = []
    with model_slot(), CAM_LOCK:
        shadow = _shadow(model)
        handle = target_layer(shadow).register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape[-2:])))
        try:
            shadow.forward_features(torch.zeros(1, 3, *input_size))
        finally:
            handle.remove()
    return seen[0]


def colour_bar(width: int = 300, height: int = 18) -> np.ndarray:
    """The heatmap's colour scale as an RGB strip: left 0 (blue), right 1 (red) = the map's own maximum."""
    return colorize(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1)))


def to_image_frame(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Map a CAM from the model's input frame back onto the original (width, height) image.

    The eval transform turns portrait images landscape (a transpose) and pads an image of
    another aspect ratio with black bands, so the bands are cut off and a portrait image's CAM
    is transposed back before it is resized.
    """
    width, height = size
    top, bottom, left, right = content_box(min(width, height), max(width, height), cam.shape)
    rows, cols = cam.shape
    cam = cam[round(top * rows):max(round(bottom * rows), round(top * rows) + 1),
              round(left * cols):max(round(right * cols), round(left * cols) + 1)]
    if height > width and cam.shape[0] < cam.shape[1]:
        cam = cam.T
    resized = cv2.resize(np.ascontiguousarray(cam), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0)


def colorize(cam: np.ndarray) -> np.ndarray:
    """[0, 1] map -> 0-255 -> Jet colour map -> RGB uint8 (OpenCV's colour maps come out BGR)."""
    scaled = np.uint8(np.round(255.0 * np.clip(cam, 0.0, 1.0)))
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


@dataclass
class HeatmapPanels:
    """The three panels shown side by side, each an (H, W, 3) uint8 RGB image of the original's size."""

    original: np.ndarray
    heatmap: np.ndarray
    overlay: np.ndarray

    def as_list(self) -> list[np.ndarray]:
        return [self.original, self.heatmap, self.overlay]


def panels(original: np.ndarray, cam: np.ndarray, opacity: float = 0.4) -> HeatmapPanels:
    """original | heatmap | overlay, the overlay being `opacity` heatmap over the original."""
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError("The original must be an (H, W, 3) uint8 RGB image.")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"Opacity must be in [0, 1], got {opacity}.")
    height, width = original.shape[:2]
    heat = colorize(to_image_frame(cam, (width, height)))
    overlay = cv2.addWeighted(heat, float(opacity), original, 1.0 - float(opacity), 0.0)
    return HeatmapPanels(original, heat, overlay)
