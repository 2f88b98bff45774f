import pytest
import torch

from core.model.networks import BACKBONES, build_model

META = 29


@pytest.mark.parametrize("name", list(BACKBONES))
@pytest.mark.parametrize("use_metadata", [True, False])
def test_forward_shapes_of_every_backbone(name, use_metadata, tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch cache: never a download
    with pytest.warns(UserWarning, match="random") if name in ("resnet50", "inception_v3") else _nothing():
        model, backbone = build_model(name, META, 7, use_metadata=use_metadata, pretrained=True)
    assert backbone.pretrained == (name == "lite0")
    model.eval()
    h, w = backbone.input_size
    x = torch.randn(2, 3, h, w)
    meta = torch.randn(2, META) if use_metadata else None
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model(x, meta)
    assert features.shape == (2, backbone.num_features)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert (model.meta is not None) == use_metadata
    assert model.get_submodule(model.cam_layer) is not None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_parts_compose_to_forward():
    model, _ = build_model("papercnn", META, 7, pretrained=False)
    model.eval()
    x, meta = torch.randn(3, 3, 128, 128), torch.randn(3, META)
    with torch.no_grad():
        parts = model.forward_head(model.forward_features(x), model.forward_meta(meta, 3))
        assert torch.allclose(parts, model(x, meta))


def test_fusion_model_needs_metadata():
    model, _ = build_model("papercnn", META, 7, pretrained=False)
    with pytest.raises(ValueError, match="metadata"):
        model(torch.randn(1, 3, 128, 128))


def test_frozen_stages_do_not_train_and_keep_their_statistics():
    model, backbone = build_model("lite0", META, 7, pretrained=True, freeze_stages=3)
    frozen = [p for m in backbone.stages[:3] for p in m.parameters()]
    assert frozen and not any(p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in backbone.stages[3].parameters())
    model.train()
    assert not any(m.training for m in backbone.stages[0].modules())
    assert backbone.stages[3].training


def test_lite0_imagenet_weights_are_loaded():
    pretrained, _ = build_model("lite0", META, 7, pretrained=True)
    scratch, _ = build_model("lite0", META, 7, pretrained=False)
    a = pretrained.backbone.conv_stem.weight
    assert not torch.allclose(a, scratch.backbone.conv_stem.weight)
    # ImageNet-trained BatchNorm statistics are not the (0, 1) defaults
    assert pretrained.backbone.bn1.running_var.mean() != pytest.approx(1.0)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_model("vgg", META, 7)
