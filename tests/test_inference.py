import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError
from core.inference import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_bundle) -> Predictor:
    return Predictor.load(tiny_bundle)


def encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def lesion(size=(200, 150), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def check(result, predictor):
    assert set(result.probs) == set(predictor.classes)
    assert sum(result.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.top == max(result.probs, key=result.probs.get)
    assert result.malignant == pytest.approx(sum(result.probs[c] for c in ("akiec", "bcc", "mel")))
    assert result.melanoma == pytest.approx(result.probs["mel"])


def test_every_input_kind_gives_the_same_answer(predictor, tmp_path):
    img = lesion()
    path = tmp_path / "x.png"
    img.save(path)
    results = [predictor.predict(x, age=40, sex="female", site="back")
               for x in (img, np.asarray(img), encode(img), path, str(path))]
    for r in results:
        check(r, predictor)
        assert r.probs == pytest.approx(results[0].probs, abs=1e-6)


@pytest.mark.parametrize("size", [(224, 224), (600, 450), (4000, 3000), (150, 200)])
def test_any_size_and_aspect(predictor, size):
    check(predictor.predict(lesion(size)), predictor)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "LA"])
def test_other_colour_modes_are_converted(predictor, mode):
    img = lesion(mode=mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    check(predictor.predict(encode(img, fmt)), predictor)


def test_metadata_changes_the_prediction_and_none_is_allowed(predictor):
    img = lesion()
    with_meta = predictor.predict(img, age=80, sex="male", site="face")
    without = predictor.predict(img)
    assert with_meta.probs != without.probs
    assert without.metadata_used == {"age": None, "sex": "unknown", "site": "unknown"}


def test_batch_equals_single(predictor):
    imgs = [lesion((200, 150)), lesion((300, 300))]
    metas = [{"age": 30, "sex": "female", "site": "back"}, {"age": None}]
    batch = predictor.predict_batch(imgs, metas)
    for img, meta, res in zip(imgs, metas, batch):
        assert res.probs == pytest.approx(predictor.predict(img, **meta).probs, abs=1e-5)


def bomb_png(width=50_000, height=50_000) -> bytes:
    """A tiny valid PNG header declaring a huge image."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty"),
        (b"this is a text file, renamed .jpg", "not an image"),
        (encode(lesion(), "JPEG")[:300], "damaged or truncated"),
        (encode(Image.new("RGB", (1, 1))), "at least 32"),
        (bomb_png(), "decompression bomb|megapixels"),
        (sixteen_bit_png(), "8-bit"),
    ],
    ids=["empty", "text", "corrupt-jpeg", "1x1", "bomb", "16-bit"],
)
def test_bad_images_raise_one_readable_error(predictor, data, message):
    with pytest.raises(InputError, match=message):
        predictor.predict(data)


@pytest.mark.parametrize(
    "meta,message",
    [({"age": -3}, "between 0 and 120"), ({"age": 250}, "between 0 and 120"),
     ({"sex": "x"}, "Sex must be"), ({"site": "elbow"}, "Unknown body site")],
)
def test_bad_metadata_is_refused(predictor, meta, message):
    with pytest.raises(InputError, match=message):
        predictor.predict(lesion(), **meta)


def test_wrong_path_and_wrong_type(predictor, tmp_path):
    with pytest.raises(InputError, match="No such image"):
        predictor.predict(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="Unsupported"):
        predictor.predict(12345)
    with pytest.raises(InputError, match="uint8"):
        predictor.predict(np.zeros((64, 64, 3), dtype=np.float32))
    with pytest.raises(InputError, match="2 images but 1"):
        predictor.predict_batch([lesion(), lesion()], [{}])


def test_the_default_model_on_a_real_image(default_bundle, real_image):
    predictor = Predictor.load(default_bundle)
    result = predictor.predict(real_image, age=80, sex="male", site="scalp")
    check(result, predictor)
    assert predictor.card["name"] and predictor.uses_metadata
