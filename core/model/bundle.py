"""A trained model on disk: `model.safetensors` (state dict only) + `model_card.json`.

The card says everything needed to rebuild and serve the model (classes in output order,
input spec, metadata vocabulary, backbone, temperature) and to judge it (data, split, metrics).
The loader checks the weights' sha256 and the class count and refuses a mismatch. Nothing is
ever unpickled.
"""
from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from core.data.metadata import MetadataEncoder
from core.errors import InputError
from core.model.networks import FusionNet, build_model

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "model_card.json"
CARD_SCHEMA = 1


class BundleError(InputError):
    """A model bundle is missing, tampered with, or inconsistent."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import numpy
    import sklearn
    import timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def save_bundle(model: FusionNet, card: dict[str, Any], out_dir: Path | str) -> Path:
    """Write weights and card; the card gets the weights' sha256 and the library versions."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    card = {**card, "schema": CARD_SCHEMA, "sha256": sha256_file(out / WEIGHTS_FILE), "libraries": library_versions()}
    write_card(card, out)
    return out


def write_card(card: dict[str, Any], bundle_dir: Path | str) -> None:
    path = Path(bundle_dir) / CARD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=1, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot store {type(value).__name__} in a model card.")


def read_card(bundle_dir: Path | str) -> dict[str, Any]:
    path = Path(bundle_dir) / CARD_FILE
    if not path.is_file():
        raise BundleError(f"No model card at {path}: is {bundle_dir} a model bundle?")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"The model card {path} is not valid JSON ({exc}).") from None
    for key in ("classes", "input", "metadata", "model", "sha256"):
        if key not in card:
            raise BundleError(f"The model card {path} lacks '{key}'.")
    return card


def load_bundle(bundle_dir: Path | str) -> tuple[FusionNet, dict[str, Any]]:
    """Rebuild the model from its card and load its weights, after checking their integrity."""
    bundle_dir = Path(bundle_dir)
    card = read_card(bundle_dir)
    weights = bundle_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"No weights file at {weights}.")
    if sha256_file(weights) != card["sha256"]:
        raise BundleError(f"{weights} does not match the sha256 in its model card: refusing to load it.")
    state = load_file(str(weights))
    spec = card["model"]
    encoder = MetadataEncoder.from_dict(card["metadata"])
    model, _ = build_model(
        spec["backbone"],
        encoder.dim,
        len(card["classes"]),
        use_metadata=spec["use_metadata"],
        pretrained=False,
        head_hidden=spec["head_hidden"],
    )
    head_key = next(k for k in reversed(list(state)) if k.startswith("head.") and k.endswith(".weight"))
    if state[head_key].shape[0] != len(card["classes"]):
        raise BundleError(
            f"The weights predict {state[head_key].shape[0]} classes but the card lists {len(card['classes'])}."
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"The weights do not fit the architecture in the card: {str(exc)[:300]}") from None
    model.eval()
    return model, card
