"""Images that are not dermoscopy, made in code: the negatives the input gate (core.clinic.gate) learns from.

Why made here and not collected: the repo ships no one else's pictures, and a generator makes as
many as the fit needs, the same ones on every machine, with a held-out part no fit has seen. The
families are the things a clinician's upload box really receives by mistake, or that a tester
tries first:

- ``inbox``, ``document``, ``webpage``: rendered screenshots (PIL text, bars and boxes);
- ``chart``: matplotlib line, bar, scatter, pie, histogram and heat-map figures;
- ``text card``: a few big words ("HELLO WORLD") on a coloured card;
- ``plain``, ``gradient``, ``noise``, ``pattern``: flat colours (skin tones included), linear and
  radial gradients, pixel and smooth noise, stripes, checks and grids;
- ``photo``: crops and mirrored whole-frame views of the natural photos that scikit-learn and
  matplotlib ship (a Chinese temple, a flower, a portrait whose face gives close-ups of skin taken
  without a dermatoscope, a parcel);
- ``scientific``: matplotlib's sample elevation maps and MRI slice under random colour maps.

Every image then goes through the same random crop / rescale / JPEG step, so the gate cannot
tell the two sides apart by compression or size. Held out: each image has its own seed, drawn
from its split's own stream (``fit`` or ``test``), and photos and scientific images are cropped
from disjoint halves of their source (left half for ``fit``, right half for ``test``), so no test
negative is a near copy of a fitted one.
"""
from __future__ import annotations

import gzip
import io
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.errors import InputError

Rng = np.random.Generator
RGB = tuple[int, int, int]

#: One random stream per split: the test negatives never share a seed with the fitted ones.
SPLIT_SEEDS: dict[str, int] = {"fit": 1, "test": 2}

SCREEN_SIZES: tuple[tuple[int, int], ...] = ((1280, 800), (1440, 900), (1366, 768), (1024, 768), (800, 600), (390, 844))

WORDS = (
    "meeting report patient invoice update schedule review summary project weekly results clinic "
    "appointment reminder newsletter account security order shipped welcome offer team lunch budget "
    "draft agenda minutes follow data model training slides notes quarterly plan hello world the and "
    "of to in for with on your our please thanks regards see attached document link sign password "
    "reset confirm payment received holiday photos friday monday lorem ipsum dolor sit amet"
).split()

PHRASES = ("HELLO WORLD", "TEST", "SAMPLE IMAGE", "HELLO", "NO IMAGE", "LOREM IPSUM", "OK", "SALE 50%", "WELCOME")

SKIN_TONES: tuple[RGB, ...] = (
    (241, 194, 167), (224, 172, 138), (198, 134, 103), (161, 102, 75), (112, 72, 52), (232, 190, 172),
)


# -- small drawing helpers ----------------------------------------------------------------
@lru_cache(maxsize=64)
def _font(size: int, style: str = "DejaVuSans") -> ImageFont.FreeTypeFont:
    """A TrueType font matplotlib ships, so text renders the same on every machine."""
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{style}.ttf"), max(6, size))


def _colour(rng: Rng) -> RGB:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _light(rng: Rng) -> RGB:
    return tuple(int(v) for v in rng.integers(225, 256, 3))


def _skin(rng: Rng) -> RGB:
    base = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))], float)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 12, 3), 0, 255))


def _any_colour(rng: Rng) -> RGB:
    """A random colour, a skin tone a third of the time (the hard case for a skin-lesion gate)."""
    return _skin(rng) if rng.random() < 1 / 3 else _colour(rng)


def _words(rng: Rng, n: int) -> str:
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def _screen(rng: Rng) -> tuple[int, int]:
    return SCREEN_SIZES[rng.integers(len(SCREEN_SIZES))]


def _text_lines(draw: ImageDraw.ImageDraw, rng: Rng, box: tuple[int, int, int, int], size: int, fill: RGB,
                style: str = "DejaVuSans") -> None:
    """Fill `box` (x0, y0, x1, y1) with ragged lines of random words."""
    x0, y0, x1, y1 = box
    font, step = _font(size, style), int(size * 1.5)
    for y in range(y0, y1 - size, step):
        length = int((x1 - x0) * rng.uniform(0.5, 1.0))
        text = _words(rng, max(1, length // (size * 3)))
        draw.text((x0, y), text, fill=fill, font=font)


# -- families -----------------------------------------------------------------------------
def inbox(rng: Rng) -> np.ndarray:
    """An e-mail client: coloured top bar, folder list, rows of sender / subject / date."""
    w, h = _screen(rng)
    img = Image.new("RGB", (w, h), _light(rng))
    draw = ImageDraw.Draw(img)
    top, side = int(h * rng.uniform(0.06, 0.1)), int(w * rng.uniform(0.14, 0.22))
    draw.rectangle((0, 0, w, top), fill=_colour(rng))
    draw.rounded_rectangle((side, top // 4, side + w // 3, top * 3 // 4), radius=top // 4, fill=(255, 255, 255))
    size = max(8, int(h / rng.uniform(45, 70)))
    for i, folder in enumerate(("Inbox", "Starred", "Sent", "Drafts", "Spam", "Trash")):
        draw.text((12, top + 15 + i * size * 2), f"{folder}  {rng.integers(0, 40)}", fill=(60, 60, 60), font=_font(size))
    row = int(size * rng.uniform(2.2, 3.2))
    for i, y in enumerate(range(top + 4, h - row, row)):
        if rng.random() < 0.3:
            draw.rectangle((side, y, w, y + row), fill=(232, 240, 254) if i % 2 else (242, 245, 245))
        draw.rectangle((side + 8, y + row // 3, side + 8 + size, y + row // 3 + size), outline=(150, 150, 150))
        text_y = y + row // 4
        draw.text((side + 2 * size + 8, text_y), _words(rng, 2).title(), fill=(20, 20, 20),
                  font=_font(size, "DejaVuSans-Bold"))
        draw.text((side + int(w * 0.28), text_y), _words(rng, 9), fill=(90, 90, 90), font=_font(size))
        draw.text((w - 5 * size, text_y), f"{rng.integers(1, 13)}:{rng.integers(10, 60)}", fill=(90, 90, 90),
                  font=_font(size))
        draw.line((side, y + row, w, y + row), fill=(220, 220, 220))
    return np.asarray(img)


def document(rng: Rng) -> np.ndarray:
    """A page of text: heading, paragraphs, sometimes a table, on white or cream paper."""
    w = int(rng.integers(500, 1100))
    h = int(w * rng.choice([1.41, 0.75, 1.0]))
    img = Image.new("RGB", (w, h), (255, 255, 255) if rng.random() < 0.7 else (250, 246, 232))
    draw = ImageDraw.Draw(img)
    margin, size = int(w * rng.uniform(0.06, 0.12)), max(8, int(w / rng.uniform(45, 80)))
    style = ("DejaVuSerif", "DejaVuSans", "DejaVuSansMono")[rng.integers(3)]
    draw.text((margin, margin), _words(rng, 4).title(), fill=(0, 0, 0), font=_font(int(size * 2), style))
    y = margin + int(size * 4)
    while y < h - margin - size * 4:
        block = int(size * 1.5 * rng.integers(3, 9))
        if rng.random() < 0.2:
            cols, rows = int(rng.integers(2, 5)), max(1, block // (size * 2))
            for r in range(rows + 1):
                draw.line((margin, y + r * size * 2, w - margin, y + r * size * 2), fill=(0, 0, 0))
            for c in range(cols + 1):
                x = margin + c * (w - 2 * margin) // cols
                draw.line((x, y, x, y + rows * size * 2), fill=(0, 0, 0))
        else:
            _text_lines(draw, rng, (margin, y, w - margin, min(y + block, h - margin)), size, (30, 30, 30), style)
        y += block + size * 2
    return np.asarray(img)


def webpage(rng: Rng) -> np.ndarray:
    """A web page: navigation bar, a hero banner with a headline, a grid of cards, a footer."""
    w, h = _screen(rng)
    img = Image.new("RGB", (w, h), _light(rng))
    draw = ImageDraw.Draw(img)
    nav, size = int(h * rng.uniform(0.06, 0.1)), max(8, int(h / rng.uniform(40, 60)))
    draw.rectangle((0, 0, w, nav), fill=_colour(rng))
    for i in range(5):
        draw.text((w // 3 + i * 8 * size, nav // 3), _words(rng, 1).title(), fill=(255, 255, 255), font=_font(size))
    hero = nav + int(h * rng.uniform(0.2, 0.35))
    img.paste(Image.fromarray(gradient(rng, (w, hero - nav))), (0, nav))
    draw.text((w // 12, nav + (hero - nav) // 3), _words(rng, 3).title(), fill=(255, 255, 255),
              font=_font(size * 3, "DejaVuSans-Bold"))
    draw.rounded_rectangle((w // 12, hero - 3 * size, w // 12 + 10 * size, hero - size), radius=size // 2,
                           fill=_colour(rng))
    cols = int(rng.integers(2, 5))
    card_w = (w - (cols + 1) * 20) // cols
    for c in range(cols):
        x = 20 + c * (card_w + 20)
        draw.rectangle((x, hero + 20, x + card_w, hero + 20 + card_w // 2), fill=_any_colour(rng))
        _text_lines(draw, rng, (x, hero + 30 + card_w // 2, x + card_w, h - 2 * nav), size, (40, 40, 40))
    draw.rectangle((0, h - nav, w, h), fill=(40, 40, 48))
    return np.asarray(img)


def chart(rng: Rng) -> np.ndarray:
    """A matplotlib figure: line, bar, scatter, pie, histogram or heat map, in a random style."""
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    style = ("default", "ggplot", "bmh", "dark_background", "fivethirtyeight", "seaborn-v0_8")[rng.integers(6)]
    with matplotlib.style.context(style):
        fig = Figure(figsize=(rng.uniform(4, 9), rng.uniform(3, 6)), dpi=int(rng.integers(70, 121)))
        ax = fig.add_subplot()
        kind = ("line", "bar", "scatter", "pie", "hist", "heatmap")[rng.integers(6)]
        n = int(rng.integers(4, 30))
        if kind == "line":
            for _ in range(int(rng.integers(1, 4))):
                ax.plot(np.cumsum(rng.normal(size=n)))
        elif kind == "bar":
            ax.bar(range(n), rng.uniform(1, 10, n))
        elif kind == "scatter":
            ax.scatter(rng.normal(size=n * 10), rng.normal(size=n * 10), c=rng.uniform(size=n * 10), s=rng.uniform(5, 40))
        elif kind == "pie":
            ax.pie(rng.uniform(1, 5, min(n, 8)))
        elif kind == "hist":
            ax.hist(rng.normal(size=500), bins=n)
        else:
            fig.colorbar(ax.imshow(rng.normal(size=(n, n)).cumsum(0), cmap=_colour_map(rng)))
        ax.set_title(_words(rng, 3).title())
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def text_card(rng: Rng) -> np.ndarray:
    """Big words on a coloured card ("HELLO WORLD" on red, and the like)."""
    w = int(rng.integers(300, 1000))
    h = int(w * rng.uniform(0.5, 1.2))
    img = Image.new("RGB", (w, h), _any_colour(rng))
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.4:
        draw.rounded_rectangle((w // 10, h // 10, w * 9 // 10, h * 9 // 10), radius=w // 20, fill=_any_colour(rng))
    text = PHRASES[rng.integers(len(PHRASES))] if rng.random() < 0.6 else _words(rng, 2).upper()
    style = ("DejaVuSans-Bold", "DejaVuSerif-Bold", "DejaVuSans")[rng.integers(3)]
    size = int(h / 3)
    while size > 8 and _font(size, style).getlength(text) > 0.85 * w:
        size = int(size * 0.9)
    draw.text((w / 2, h / 2), text, fill=_colour(rng), font=_font(size, style), anchor="mm")
    return np.asarray(img)


def _size(rng: Rng) -> tuple[int, int]:
    """A random (width, height) for the synthetic families."""
    w = int(rng.integers(200, 1000))
    return w, int(w * rng.uniform(0.5, 1.4))


def plain(rng: Rng) -> np.ndarray:
    """One flat colour, sometimes with a little sensor-like noise."""
    w, h = _size(rng)
    img = np.empty((h, w, 3), np.float64)
    img[:] = _any_colour(rng)
    if rng.random() < 0.5:
        img += rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def gradient(rng: Rng, size: tuple[int, int] | None = None) -> np.ndarray:
    """A linear gradient at a random angle, or a radial one, between two colours."""
    w, h = size or _size(rng)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
    else:
        t = np.hypot(x - rng.uniform(0, w / max(h, w)), y - rng.uniform(0, h / max(h, w)))
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    a, b = np.array(_any_colour(rng), float), np.array(_any_colour(rng), float)
    return (a + (b - a) * t[..., None]).astype(np.uint8)


def noise(rng: Rng) -> np.ndarray:
    """Pixel noise (Gaussian, uniform, salt and pepper) or smooth noise mapped between two colours."""
    w, h = _size(rng)
    kind = rng.integers(4)
    if kind == 0:
        return np.clip(rng.normal(_any_colour(rng), rng.uniform(10, 60), (h, w, 3)), 0, 255).astype(np.uint8)
    if kind == 1:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == 2:
        img = np.full((h, w, 3), _any_colour(rng), np.uint8)
        img[rng.random((h, w)) < rng.uniform(0.02, 0.3)] = _colour(rng)
        return img
    field = cv2.GaussianBlur(rng.normal(size=(h, w)), (0, 0), rng.uniform(2, 40))
    t = ((field - field.min()) / max(np.ptp(field), 1e-9))[..., None]
    a, b = np.array(_any_colour(rng), float), np.array(_any_colour(rng), float)
    return (a + (b - a) * t).astype(np.uint8)


def pattern(rng: Rng) -> np.ndarray:
    """Stripes, a checkerboard or a grid of lines in two colours."""
    w, h = _size(rng)
    y, x = np.mgrid[0:h, 0:w]
    period = int(rng.integers(2, 60))
    kind = rng.integers(3)
    if kind == 0:
        mask = ((x if rng.random() < 0.5 else y) // period) % 2 == 0
    elif kind == 1:
        mask = ((x // period) + (y // period)) % 2 == 0
    else:
        mask = (x % period < 2) | (y % period < 2)
    img = np.empty((h, w, 3), np.uint8)
    img[mask], img[~mask] = _any_colour(rng), _any_colour(rng)
    return img


# -- shipped pictures ---------------------------------------------------------------------
@lru_cache(maxsize=1)
def photo_sources() -> tuple[np.ndarray, ...]:
    """The natural photos the installed packages ship: scikit-learn's two, matplotlib's two."""
    from matplotlib import cbook
    from sklearn.datasets import load_sample_images

    shipped = list(load_sample_images().images)
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        with cbook.get_sample_data(name) as handle:
            shipped.append(np.asarray(Image.open(handle).convert("RGB")))
    return tuple(shipped)


@lru_cache(maxsize=1)
def scientific_sources() -> tuple[np.ndarray, ...]:
    """Matplotlib's sample elevation maps and MRI slice, as float arrays (coloured when drawn)."""
    from matplotlib import cbook

    fields = [np.asarray(cbook.get_sample_data("jacksboro_fault_dem.npz")["elevation"], float),
              np.asarray(cbook.get_sample_data("topobathy.npz")["topo"], float)]
    with cbook.get_sample_data("s1045.ima.gz") as handle:
        raw = handle.read()
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    fields.append(np.frombuffer(raw, np.uint16).reshape(256, 256).astype(float))
    return tuple(fields)


def _half(array: np.ndarray, split: str) -> np.ndarray:
    """The left half for the fit split, the right half for the test split: disjoint crops."""
    mid = array.shape[1] // 2
    return array[:, :mid] if split == "fit" else array[:, mid:]


def _crop(array: np.ndarray, rng: Rng, smallest: float = 0.3) -> np.ndarray:
    """A random window of `array`, between `smallest` and all of each side."""
    h, w = array.shape[:2]
    ch, cw = (max(8, int(side * rng.uniform(smallest, 1.0))) for side in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return array[y:y + ch, x:x + cw]


def _colour_map(rng: Rng) -> str:
    return ("viridis", "terrain", "gray", "hot", "jet", "magma", "coolwarm", "bone")[rng.integers(8)]


def photo(rng: Rng, split: str) -> np.ndarray:
    """A crop of the split's own half of a shipped photo, or that half beside its mirror image: a
    whole-frame view with the subject in the middle, as a lesion would be, without the other half's
    pixels. Turned by a random multiple of 90 degrees."""
    sources = photo_sources()
    half = _half(sources[rng.integers(len(sources))], split)
    view = np.hstack([half, half[:, ::-1]]) if rng.random() < 0.3 else _crop(half, rng)
    return np.ascontiguousarray(np.rot90(view, int(rng.integers(4))))


def scientific(rng: Rng, split: str) -> np.ndarray:
    """A crop of a shipped elevation map or MRI slice under a random colour map."""
    import matplotlib

    sources = scientific_sources()
    field = _crop(_half(sources[rng.integers(len(sources))], split), rng, smallest=0.5)
    t = (field - field.min()) / max(np.ptp(field), 1e-9)
    return (matplotlib.colormaps[_colour_map(rng)](t)[..., :3] * 255).astype(np.uint8)


def _drawn(make: Callable[[Rng], np.ndarray]) -> Callable[[Rng, str], np.ndarray]:
    """Adapt a family that draws from scratch (no source to split) to the (rng, split) signature."""
    return lambda rng, split: make(rng)


#: Every family by name; a generator takes its own random stream and the split.
FAMILIES: dict[str, Callable[[Rng, str], np.ndarray]] = {
    "inbox": _drawn(inbox),
    "document": _drawn(document),
    "webpage": _drawn(webpage),
    "chart": _drawn(chart),
    "text card": _drawn(text_card),
    "plain": _drawn(plain),
    "gradient": _drawn(gradient),
    "noise": _drawn(noise),
    "pattern": _drawn(pattern),
    "photo": photo,
    "scientific": scientific,
}


# -- the common last step -----------------------------------------------------------------
def degrade(rgb: np.ndarray, rng: Rng) -> np.ndarray:
    """A random crop, rescale and JPEG round trip, as an uploaded file would have had."""
    if rng.random() < 0.3:
        rgb = _crop(rgb, rng, smallest=0.5)
    h, w = rgb.shape[:2]
    scale = rng.uniform(0.4, 1.5) if rng.random() < 0.5 else 1.0
    scale = max(scale, 64 / min(h, w))  # never below what the app accepts
    if scale != 1.0:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=interpolation)
    if rng.random() < 0.5:
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, "JPEG", quality=int(rng.integers(30, 96)))
        rgb = np.asarray(Image.open(out).convert("RGB"))
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _family_seed(name: str) -> int:
    """A stable number per family name, so adding a family never changes another's images."""
    return zlib.crc32(name.encode())


def make_negative(family: str, split: str, index: int) -> np.ndarray:
    """Negative number `index` of `family` in `split`: the same image on every call and machine."""
    if split not in SPLIT_SEEDS:
        raise InputError(f"Unknown negatives split {split!r}; use one of {', '.join(SPLIT_SEEDS)}.")
    if family not in FAMILIES:
        raise InputError(f"Unknown negatives family {family!r}; use one of {', '.join(FAMILIES)}.")
    rng = np.random.default_rng([SPLIT_SEEDS[split], _family_seed(family), index])
    return degrade(FAMILIES[family](rng, split), rng)


def negatives(split: str, per_family: int, families: Sequence[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(family, image) pairs, `per_family` of each family, made lazily (full-size images are large)."""
    for family in families or FAMILIES:
        for index in range(per_family):
            yield family, make_negative(family, split, index)
