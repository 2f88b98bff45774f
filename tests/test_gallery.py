"""The paper's visual transforms and the augmentation preview (which must use the real pipeline)."""
from __future__ import annotations

import numpy as np
import pytest

from core.eda import gallery
from core.errors import InputError


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)


def test_panels_shapes_and_order(image):
    panels = gallery.paper_gallery(image)
    assert list(panels)[:3] == ["Original", "Greyscale", "Ben Graham, without Gaussian blur"]
    assert len(panels) == 6
    for title, panel in panels.items():
        assert panel.dtype == np.uint8 and panel.shape[:2] == (60, 80), title


def test_ben_graham_flattens_uniform_light_to_mid_grey():
    flat = np.full((50, 50, 3), 90, dtype=np.uint8)
    assert np.all(gallery.ben_graham(flat) == 128)
    assert np.all(gallery.ben_graham(flat, smooth_sigma=2) == 128)


def test_blur_reduces_high_frequency_noise(image):
    assert gallery.ben_graham(image, smooth_sigma=2).std() < gallery.ben_graham(image).std()


def test_hsb_identity_and_brightness(image):
    same = gallery.adjust_hsb(image, 0, 1, 1)
    assert np.abs(same.astype(int) - image).max() <= 1  # float HSV round trip
    assert gallery.adjust_hsb(image, brightness=0.5).mean() < image.mean()


def test_luv_of_grey_has_neutral_chroma():
    grey = np.full((4, 4, 3), 128, dtype=np.uint8)
    luv = gallery.to_luv(grey)
    assert abs(int(luv[0, 0, 1]) - 96) <= 2 and abs(int(luv[0, 0, 2]) - 136) <= 2  # OpenCV's u, v offsets


def test_rejects_non_rgb():
    with pytest.raises(InputError, match="HxWx3 uint8"):
        gallery.greyscale(np.zeros((4, 4), dtype=np.uint8))


def test_augmentation_preview_uses_train_transform(image, monkeypatch):
    import core.data.transforms

    calls = []
    real = core.data.transforms.train_transform
    monkeypatch.setattr(core.data.transforms, "train_transform", lambda *a: calls.append(a) or real(*a))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    draws = gallery.augmentation_preview(image, 3, (32, 48), mean, std, seed=5)
    assert calls == [((32, 48), mean, std)]
    assert [d.shape for d in draws] == [(32, 48, 3)] * 3 and all(d.dtype == np.uint8 for d in draws)
    again = gallery.augmentation_preview(image, 3, (32, 48), mean, std, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))  # seeded
    assert not np.array_equal(draws[0], draws[1])  # but random draw to draw
