"""A set of many images is scored one batch at a time: the memory it holds does not grow with the
number of images (core.validate.score decodes the next batch while the current one is scored)."""
from __future__ import annotations

import tracemalloc

import numpy as np
from PIL import Image

from core.validation import validate
from core.inference import Predictor
from core.validation.inputs import load_set
from tests.test_validate import _card

SIDE = (600, 800)  # a 1.4 MB decoded RGB image: what a batch holds shows, what the set holds would too


def _set(folder, n: int):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*SIDE, 3), dtype=np.uint8)).save(folder / f"i{i}.png", compress_level=0)
    (folder / "labels.csv").write_text("image_id,dx\n" + "".join(f"i{i},{'mel' if i % 2 else 'nv'}\n" for i in range(n)))
    return load_set(folder, folder / "labels.csv", _card())


def _peak_mb(predictor: Predictor, vset, batch: int) -> float:
    tracemalloc.start()
    try:
        scored = validate.score(predictor, vset, batch_size=batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(scored.predictions) == len(vset.rows)
    return peak / 2**20


def test_scoring_memory_does_not_grow_with_the_set(tiny_bundle, tmp_path):
    predictor = Predictor.load(tiny_bundle)
    small, large = _set(tmp_path / "small", 8), _set(tmp_path / "large", 40)
    image_mb = SIDE[0] * SIDE[1] * 3 / 2**20
    peaks = [_peak_mb(predictor, vset, batch=4) for vset in (small, large)]
    # About two batches of four decoded images (measured: 14 MB for 8 images and for 40), whatever the set's
    # size; the whole set at once would peak at 58 MB.
    assert peaks[1] < peaks[0] + 4 * image_mb, peaks
    assert peaks[1] < 20 * image_mb, peaks
