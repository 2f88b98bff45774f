import json
import shutil

import pytest
import torch

from core.data.metadata import MetadataEncoder
from core.model.bundle import BundleError, load_bundle, read_card
from core.model.networks import build_model


def test_round_trip_gives_identical_outputs(tiny_bundle):
    model, card = load_bundle(tiny_bundle)
    again, _ = load_bundle(tiny_bundle)
    x, meta = torch.randn(2, 3, 128, 128), torch.randn(2, MetadataEncoder().dim)
    with torch.no_grad():
        assert torch.equal(model(x, meta), again(x, meta))
    assert card["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert len(card["sha256"]) == 64 and "torch" in card["libraries"]
    assert not model.training


def test_saved_weights_equal_the_trained_ones(tiny_bundle):
    torch.manual_seed(0)  # the fixture's seed: the same random init
    original, _ = build_model("papercnn", MetadataEncoder().dim, 7, pretrained=False)
    loaded, _ = load_bundle(tiny_bundle)
    for (k, a), (_, b) in zip(original.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def copy(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "copy")


def test_tampered_weights_are_refused(tiny_bundle, tmp_path):
    bundle = copy(tiny_bundle, tmp_path)
    data = bytearray((bundle / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


def test_class_count_mismatch_is_refused(tiny_bundle, tmp_path):
    bundle = copy(tiny_bundle, tmp_path)
    card = json.loads((bundle / "model_card.json").read_text())
    card["classes"] = card["classes"][:6]
    (bundle / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(BundleError, match="7 classes but the card lists 6"):
        load_bundle(bundle)


def test_missing_or_broken_card(tmp_path, tiny_bundle):
    with pytest.raises(BundleError, match="No model card"):
        read_card(tmp_path)
    bundle = copy(tiny_bundle, tmp_path)
    (bundle / "model_card.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_card(bundle)


def test_a_pickle_is_never_loaded(tiny_bundle, tmp_path):
    """A pickled file in place of the safetensors weights fails the hash check and is never unpickled."""
    bundle = copy(tiny_bundle, tmp_path)
    model, _ = load_bundle(bundle)
    torch.save(model, bundle / "model.safetensors")
    with pytest.raises(BundleError):
        load_bundle(bundle)
