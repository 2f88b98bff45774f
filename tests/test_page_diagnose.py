"""The Diagnose page under streamlit's AppTest: a real upload end to end, and every bad input's message."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.clinic import audit
from tests.test_quality import make_dicom

PAGE = str(Path(__file__).resolve().parent.parent / "app_pages" / "1_Diagnose.py")
TIMEOUT = 180  # the first run imports torch and loads the model


def _fresh_page() -> AppTest:
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    return at


@pytest.fixture
def page(default_bundle, tmp_path, monkeypatch) -> AppTest:
    """A fresh app session with its own audit database."""
    monkeypatch.setenv("DERMO_MODEL_DIR", str(default_bundle))
    monkeypatch.setenv(audit.AUDIT_ENV, str(tmp_path / "audit.sqlite3"))
    return _fresh_page()


@pytest.fixture(scope="module")
def served(default_bundle, tmp_path_factory):
    """One app session that every bad input is thrown at in turn: it must keep serving throughout."""
    db = tmp_path_factory.mktemp("audit") / "audit.sqlite3"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DERMO_MODEL_DIR", str(default_bundle))
        mp.setenv(audit.AUDIT_ENV, str(db))
        yield _fresh_page(), db


def image_bytes(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.file_uploader(key="diagnose_upload").set_value([(name, data, "application/octet-stream") for name, data in files])
    return at.run()


def insist(at: AppTest) -> AppTest:
    """Tick 'show anyway' where the input gate withheld the output."""
    boxes = [c for c in at.checkbox if c.key == "diagnose_override"]
    return boxes[0].check().run() if boxes else at


def images(at: AppTest) -> list:
    return at.get("image")


def messages(at: AppTest) -> str:
    return " | ".join(e.value for e in at.error)


def test_upload_fill_form_and_see_everything(page, lesion_jpeg, tmp_path):
    at = page
    assert any("optional" in c.value.lower() and "improves the estimate" in c.value for c in at.caption)
    assert at.selectbox(key="diagnose_sex").value == "unknown" and at.selectbox(key="diagnose_site").value == "unknown"
    at.number_input(key="diagnose_age").set_value(55)
    at.selectbox(key="diagnose_sex").set_value("male")
    at.selectbox(key="diagnose_site").set_value("back")
    at = insist(upload(at, ("lesion.jpg", lesion_jpeg)))
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1
    assert at.metric[0].label == "Suggested class"
    risks = " ".join(m.value for m in [*at.warning, *at.info])
    assert "Malignant risk" in risks and "Melanoma risk" in risks and "referral threshold" in risks
    assert any("version" in c.value and "Model:" in c.value for c in at.caption)
    assert any("where" in c.value and "grid" in c.value for c in at.caption)
    assert len(images(at)) == 5  # as uploaded + original | heatmap | overlay + colour scale
    assert {b.key for b in at.get("download_button")} >= {"diagnose_report", "diagnose_audit_csv"}
    assert audit.count(tmp_path / "audit.sqlite3") == 1
    logged = audit.read(tmp_path / "audit.sqlite3").iloc[0]
    assert '"site": "back"' in logged["metadata"] and '"age": 55.0' in logged["metadata"]

    # Another method and target class; changing only the opacity does not add an audit record.
    at.selectbox(key="diagnose_cam_method").set_value("EigenCAM")
    at.selectbox(key="diagnose_cam_target").set_value("nv")
    at.slider(key="diagnose_opacity").set_value(0.8)
    at.run()
    assert not at.exception and len(images(at)) == 5
    assert audit.count(tmp_path / "audit.sqlite3") == 1


def test_model_is_loaded_once_per_process_not_per_rerun(default_bundle, tmp_path, monkeypatch, lesion_jpeg):
    from core.inference import Predictor

    loads = []
    original = Predictor.load.__func__
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, path: loads.append(path) or original(cls, path)))
    monkeypatch.setenv("DERMO_MODEL_DIR", str(default_bundle))
    monkeypatch.setenv(audit.AUDIT_ENV, str(tmp_path / "audit.sqlite3"))
    at = insist(upload(_fresh_page(), ("lesion.jpg", lesion_jpeg)))
    at.slider(key="diagnose_opacity").set_value(0.7).run()
    at.run()
    assert not at.exception and len(loads) == 1


def test_several_images_give_a_table_and_csv(page, lesion_jpeg):
    second = image_bytes(Image.open(io.BytesIO(lesion_jpeg)).rotate(180).resize((400, 300)), "JPEG", quality=95)
    at = insist(upload(page, ("a.jpg", lesion_jpeg), ("b.jpg", second)))
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["file"]) == ["a.jpg", "b.jpg"]
    assert {"case", "suggested class", "malignant risk", "melanoma risk", "flags"} <= set(table.columns)
    assert "diagnose_csv" in {b.key for b in at.get("download_button")}
    assert at.selectbox(key="diagnose_case").value == 0


def test_dicom_prefills_the_form(page, lesion_jpeg):
    pixels = np.asarray(Image.open(io.BytesIO(lesion_jpeg)).convert("RGB"))
    data = make_dicom(pixels, PatientAge="063Y", PatientSex="F", BodyPartExamined="BACK")
    at = insist(upload(page, ("case.dcm", data)))
    assert not at.exception and not at.error
    assert at.number_input(key="diagnose_age").value == 63
    assert at.selectbox(key="diagnose_sex").value == "female"
    assert at.selectbox(key="diagnose_site").value == "back"
    assert len(at.get("plotly_chart")) == 1


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid PNG whose header declares width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bad_inputs(lesion: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {
        "corrupt jpeg": ("corrupt.jpg", lesion[: len(lesion) // 3], "damaged or truncated"),
        "text as jpg": ("notes.jpg", b"Patient notes, not an image.\n" * 20, "not an image"),
        "empty": ("empty.jpg", b"", "empty"),
        "1x1": ("dot.png", image_bytes(Image.new("RGB", (1, 1))), "only 1 x 1 pixels"),
        "16-bit png": ("deep.png", image_bytes(Image.fromarray((np.arange(200 * 150, dtype=np.uint16) % 65535).reshape(150, 200))), "8-bit"),
        "bomb": ("bomb.png", _png_declaring(50_000, 50_000), "decompression bomb"),
        "over the limit": ("huge.jpg", b"\xff\xd8\xff" + b"\0" * (int(st.get_option("server.maxUploadSize")) * 2**20 + 10), "upload limit"),
    }


@pytest.mark.parametrize("case", ["corrupt jpeg", "text as jpg", "empty", "1x1", "16-bit png", "bomb", "over the limit"])
def test_bad_file_gets_a_message_and_no_audit(served, lesion_jpeg, case):
    at, db = served
    name, data, expected = _bad_inputs(lesion_jpeg)[case]
    at = upload(at, (name, data))
    assert not at.exception
    assert expected in messages(at) and name in messages(at)
    assert not at.get("plotly_chart") and not images(at)
    assert audit.count(db) == 0


@pytest.mark.parametrize("age", [-3, 250])
def test_impossible_age_is_refused_by_the_widget_and_never_analysed(served, lesion_jpeg, age):
    """The age box takes whole years from 0 to 120: an impossible age never reaches the model."""
    at, db = served
    box = at.number_input(key="diagnose_age")
    assert (box.min, box.max, box.step) == (0, 120, 1)
    at = box.set_value(age).run()
    assert at.number_input(key="diagnose_age").value is None  # refused: the age stays unknown
    at = upload(at, ("lesion.jpg", lesion_jpeg))
    assert not at.exception
    logged = audit.read(db)
    assert not any(f'"age": {float(age)}' in m for m in logged["metadata"])
    at.number_input(key="diagnose_age").set_value(None)


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK"])
def test_other_colour_modes_are_converted(served, lesion_jpeg, mode):
    at, _ = served
    img = Image.open(io.BytesIO(lesion_jpeg)).convert(mode)
    data = image_bytes(img, "JPEG" if mode == "CMYK" else "PNG")
    at = insist(upload(at, (f"lesion_{mode}.{'jpg' if mode == 'CMYK' else 'png'}", data)))
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1 and len(images(at)) == 5
    if mode == "L":
        assert any("colour" in w.value for w in at.warning)


def test_poor_quality_is_shown_with_its_reason(page, lesion_jpeg, tmp_path):
    from PIL import ImageFilter

    blurred = image_bytes(Image.open(io.BytesIO(lesion_jpeg)).convert("RGB").filter(ImageFilter.GaussianBlur(3)))
    at = upload(page, ("blurred.png", blurred))
    assert not at.exception and not at.error
    assert any("out of focus" in w.value and "poor quality" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1 and audit.count(tmp_path / "audit.sqlite3") == 1
    assert "blurry" in audit.read(tmp_path / "audit.sqlite3").iloc[0]["quality_flags"]
    assert "does not suggest referral" not in " ".join(m.value for m in [*at.warning, *at.info])


def screenshot() -> bytes:
    """An e-mail inbox as a screenshot: nothing like dermoscopy."""
    from PIL import ImageDraw

    img = Image.new("RGB", (1280, 800), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 1280, 60], fill=(32, 90, 170))
    draw.rectangle([0, 60, 230, 800], fill=(240, 242, 245))
    for i in range(14):
        y = 80 + 48 * i
        draw.text((250, y), f"Colleague {i}  Re: clinic rota for next week, please confirm", fill="black")
        draw.line([240, y + 40, 1280, y + 40], fill=(220, 220, 220))
    return image_bytes(img)


def test_a_screenshot_is_withheld_and_logged(page, tmp_path):
    at = upload(page, ("inbox.png", screenshot()))
    assert not at.exception
    assert any("does not look like a dermoscopic image" in e.value for e in at.error)
    assert not at.get("plotly_chart") and not at.metric
    rows = audit.read(tmp_path / "audit.sqlite3")
    assert len(rows) == 1 and bool(rows.iloc[0]["withheld"])


def _test_image(dx: str) -> bytes:
    """A histology-confirmed test-split image of class `dx` (real data)."""
    import pandas as pd

    from tests.conftest import HAM_DIR

    if not (HAM_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip("real data not present")
    meta = pd.read_csv(HAM_DIR / "HAM10000_metadata.csv")
    split = pd.read_csv(Path(__file__).resolve().parent.parent / "splits" / "ham10000.csv")
    rows = meta.merge(split, on="image_id").query("split == 'test' and dx == @dx and dx_type == 'histo'")
    return (HAM_DIR / "images" / f"{rows['image_id'].iloc[0]}.jpg").read_bytes()


def test_a_real_bcc_is_shown(page):
    at = upload(page, ("bcc.jpg", _test_image("bcc")))
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1 and at.metric[0].label == "Suggested class"


def test_headline_and_referral_agree(page, default_bundle):
    """A melanoma: the headline is melanoma, or, when the melanoma referral fires under another
    headline, the page says melanoma cannot be ruled out. Never a silent contradiction."""
    from core.inference import Predictor

    data = _test_image("mel")
    p = Predictor.load(default_bundle).predict(data)
    at = upload(page, ("mel.jpg", data))
    assert not at.exception and not at.error
    text = " ".join(m.value for m in [*at.warning, *at.info])
    assert at.metric[0].value == page_label(p.top)
    if p.refer_melanoma and p.top != "mel":
        assert "melanoma cannot be ruled out" in text
    else:
        assert "cannot be ruled out" not in text or p.refer_malignant


def page_label(code: str) -> str:
    from core import config

    return config.CLASS_NAMES[code]


def test_borderline_risk_is_labelled(default_bundle, tmp_path, monkeypatch, lesion_jpeg):
    """Thresholds set just above this image's risks: both statements read BORDERLINE."""
    import shutil

    from core.inference import Predictor
    from core.model.bundle import read_card, write_card

    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle, bundle)
    p = Predictor.load(bundle).predict(lesion_jpeg)
    card = read_card(bundle)
    card["referral_thresholds"] = {"malignant": {"threshold": p.malignant * 1.2, "how": "test"},
                                   "melanoma": {"threshold": p.melanoma * 1.2, "how": "test"}}
    write_card(card, bundle)
    monkeypatch.setenv("DERMO_MODEL_DIR", str(bundle))
    monkeypatch.setenv(audit.AUDIT_ENV, str(tmp_path / "audit.sqlite3"))
    at = insist(upload(_fresh_page(), ("lesion.jpg", lesion_jpeg)))
    assert not at.exception
    assert sum("BORDERLINE" in m.value for m in at.info) == 2


def test_one_audit_row_per_analysis_and_the_page_names_its_case_id(page, lesion_jpeg, tmp_path):
    """Upload first, then type age, sex and site: every change is one versioned row of one case
    (never a duplicate on a rerun), and the case shown (whose ID the PDF report carries, see
    test_report_audit) is the newest row."""
    db = tmp_path / "audit.sqlite3"
    at = insist(upload(page, ("lesion.jpg", lesion_jpeg)))
    at.number_input(key="diagnose_age").set_value(55).run()
    at.selectbox(key="diagnose_sex").set_value("male").run()
    at.selectbox(key="diagnose_site").set_value("back").run()
    at.slider(key="diagnose_opacity").set_value(0.7).run()
    rows = audit.read(db)
    assert len(rows) == 4
    base = rows["case_id"].iloc[-1].split("/")[0]
    assert list(rows["case_id"]) == [f"{base}/{v}" for v in (4, 3, 2, 1)]  # newest first
    assert any(f"Case {base}/4:" in h.value for h in at.subheader)


def test_a_large_batch_is_bounded(page, lesion_jpeg, tmp_path):
    """Each decoded image is kept for the session: at most MAX_FILES are analysed at a time, with a message."""
    from ui.diagnose import MAX_FILES

    at = upload(page, *[(f"lesion{i:02d}.jpg", lesion_jpeg) for i in range(MAX_FILES + 1)])
    assert not at.exception
    assert any(f"only the first {MAX_FILES} are analysed" in w.value for w in at.warning)
    assert len(at.dataframe[0].value) == MAX_FILES and audit.count(tmp_path / "audit.sqlite3") == MAX_FILES
