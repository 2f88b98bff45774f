"""core.explain.heatmap: every CAM method's shape and range, hooks removed, thread safety, the panels."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core.explain import heatmap
from core.inference import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor.load(tiny_bundle)


@pytest.fixture(scope="module")
def case(predictor: Predictor) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    return predictor.image_tensor(image), predictor.meta_tensor(55, "male", "back")


def _all_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("method", list(heatmap.CAM_METHODS))
def test_every_method_gives_a_map_in_unit_range(predictor, case, method):
    image, meta = case
    cam = heatmap.compute_cam(predictor.model, image, meta, target_class=4, method=method)
    assert cam.shape == tuple(image.shape[1:])
    assert cam.dtype == np.float32
    assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0
    assert cam.max() == pytest.approx(1.0) or cam.max() == 0.0


def test_required_methods_come_from_pytorch_grad_cam():
    for name in ("Grad-CAM", "Grad-CAM++", "EigenCAM"):
        assert heatmap.CAM_METHODS[name].__module__.startswith("pytorch_grad_cam")


def test_hooks_removed_and_shared_model_untouched(predictor, case):
    image, meta = case
    before = [p.detach().clone() for p in predictor.model.parameters()]
    heatmap.compute_cam(predictor.model, image, meta, 0, "Grad-CAM")
    assert _all_hooks(predictor.model) == 0
    assert _all_hooks(heatmap._shadow(predictor.model)) == 0
    assert all(p.grad is None for p in predictor.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, predictor.model.parameters()))
    assert not predictor.model.training


def test_hooks_removed_even_when_the_cam_fails(predictor, case):
    image, meta = case
    with pytest.raises(Exception):
        heatmap.compute_cam(predictor.model, image, meta[:3], 0, "Grad-CAM")  # wrong metadata width
    assert _all_hooks(heatmap._shadow(predictor.model)) == 0
    assert not heatmap.CAM_LOCK.locked()


def test_target_class_changes_the_map(predictor, case):
    image, meta = case
    maps = [heatmap.compute_cam(predictor.model, image, meta, c, "Grad-CAM") for c in range(3)]
    assert any(not np.allclose(maps[0], m) for m in maps[1:])


def test_same_result_from_two_threads_sharing_the_model(predictor, case):
    image, meta = case
    expected = heatmap.compute_cam(predictor.model, image, meta, 4, "Grad-CAM")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def cam_worker() -> None:
        try:
            for _ in range(3):
                results.append(heatmap.compute_cam(predictor.model, image, meta, 4, "Grad-CAM"))
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    def predict_worker() -> None:  # predictions on the shared model while CAMs run
        for _ in range(5):
            predictor.probabilities(torch.stack([image] * 2), torch.stack([meta] * 2))

    threads = [threading.Thread(target=cam_worker), threading.Thread(target=cam_worker), threading.Thread(target=predict_worker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 6
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_image_only_model_is_supported(tmp_path):
    from core.data.metadata import MetadataEncoder
    from core.model.bundle import save_bundle
    from core.model.networks import build_model
    from tests.conftest import tiny_card

    torch.manual_seed(0)
    encoder = MetadataEncoder()
    model, _ = build_model("papercnn", encoder.dim, 7, use_metadata=False, pretrained=False)
    p = Predictor.load(save_bundle(model.eval(), tiny_card(encoder, use_metadata=False), tmp_path / "img"))
    cam = heatmap.compute_cam(p.model, p.image_tensor(np.full((128, 128, 3), 90, np.uint8)), None, 1)
    assert cam.shape == (128, 128)


def test_unknown_method_and_class_are_refused(predictor, case):
    image, meta = case
    with pytest.raises(ValueError):
        heatmap.compute_cam(predictor.model, image, meta, 0, "NoSuchCAM")
    with pytest.raises(ValueError):
        heatmap.compute_cam(predictor.model, image, meta, 7)


def test_normalise_and_colorize_follow_the_paper():
    cam = heatmap.normalise(np.array([[2.0, 4.0], [6.0, 10.0]]))
    np.testing.assert_allclose(cam, [[0.0, 0.25], [0.5, 1.0]])
    assert not heatmap.normalise(np.full((3, 3), 5.0)).any()
    rgb = heatmap.colorize(np.array([[0.0, 1.0]]))
    # Jet: 0 is dark blue and 1 dark red; in RGB order, after the BGR -> RGB conversion.
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3)
    assert rgb[0, 0, 2] > 100 and rgb[0, 0, 0] == 0
    assert rgb[0, 1, 0] > 100 and rgb[0, 1, 2] == 0


def test_panels_match_the_original_and_blend_with_opacity(rng):
    original = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)  # portrait: the CAM comes landscape
    cam = np.linspace(0, 1, 150 * 200, dtype=np.float32).reshape(150, 200)
    panels = heatmap.panels(original, cam, opacity=0.0)
    assert all(p.shape == original.shape and p.dtype == np.uint8 for p in panels.as_list())
    np.testing.assert_array_equal(panels.overlay, original)
    full = heatmap.panels(original, cam, opacity=1.0)
    np.testing.assert_array_equal(full.overlay, full.heatmap)
    with pytest.raises(ValueError):
        heatmap.panels(original, cam, opacity=1.5)


def test_a_padded_upload_maps_back_without_its_bands():
    """A square image is padded left and right in the model's frame; its CAM maps back onto the image
    without the bands: a hot spot at the frame's content centre lands at the image's centre."""
    cam = np.zeros((150, 200), np.float32)
    cam[:, :25] = 1.0  # hot only inside the left band (pixels 0-24 of 200), which is not image
    back = heatmap.to_image_frame(cam, (224, 224))
    assert back.shape == (224, 224) and back.max() < 0.05
    cam = np.zeros((150, 200), np.float32)
    cam[70:80, 95:105] = 1.0
    back = heatmap.to_image_frame(cam, (224, 224))
    peak = np.unravel_index(back.argmax(), back.shape)
    assert abs(peak[0] - 112) < 12 and abs(peak[1] - 112) < 12


def test_grid_shape_and_colour_bar(predictor):
    rows, cols = heatmap.grid_shape(predictor.model, (128, 128))
    assert rows * cols > 1 and rows < 128
    bar = heatmap.colour_bar(100, 10)
    assert bar.shape == (10, 100, 3) and bar[0, 0, 2] > bar[0, 0, 0] and bar[0, -1, 0] > bar[0, -1, 2]
