"""core.clinic.report (the PDF and its wording) and core.clinic.audit (SQLite in WAL mode, crash-safe writes)."""
from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np

from core.clinic import audit
from core.clinic.report import build_report, risk_statements
from core.config import REPO_ROOT
from core.inference import Prediction

CARD = {
    "name": "tiny-papercnn",
    "version": "test",
    "class_names": {"mel": "Melanoma", "nv": "Melanocytic nevus"},
    "referral_thresholds": {"malignant": {"threshold": 0.3}, "melanoma": {"threshold": 0.1}},
    "classes": ["mel", "nv"], "malignant": ["mel"], "melanoma": "mel",
    "temperature": 1.5,
    "metrics": {
        "all_inputs": {
            "n_images": 1500, "n_lesions": 1100, "balanced_accuracy": 0.71, "macro_auroc": 0.93,
            "malignant": {"auroc": 0.9, "auroc_ci95": [0.88, 0.92], "sensitivity": 0.9, "specificity": 0.7, "threshold": 0.3},
            "melanoma": {"auroc": 0.85, "auroc_ci95": [0.8, 0.9], "sensitivity": 0.9, "specificity": 0.6, "threshold": 0.1},
        }
    },
}


def prediction(mel: float = 0.6) -> Prediction:
    return Prediction(
        probs={"mel": mel, "nv": 1 - mel}, malignant=mel, melanoma=mel, top="mel" if mel >= 0.5 else "nv",
        most_probable="mel" if mel >= 0.5 else "nv", refer_malignant=mel >= 0.3, refer_melanoma=mel >= 0.1, metadata_used={"age": 55.0, "sex": "male", "site": "back"},
    )


def test_risk_wording_is_decision_support_never_a_diagnosis():
    high, low = risk_statements(prediction(0.6), CARD), risk_statements(prediction(0.05), CARD)
    assert all(s.refer for s in high) and not any(s.refer for s in low)
    assert "consider referral / biopsy" in high[1].sentence and "60.0%" in high[1].sentence
    assert "does not suggest referral" in low[0].sentence
    for s in high + low:
        assert "diagnosis" not in s.sentence.lower()


def test_pdf_report_has_every_section(rng):
    image = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    pdf = build_report(prediction(), CARD, image, 255 - image, "Grad-CAM overlay for Melanoma", ["The image is blurry."],
                       when=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc))
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf.count(b"/Subtype /Image") >= 2  # the image and the overlay


def test_pdf_text_content(rng):
    image = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    pdf = build_report(prediction(), CARD, image, image, "Grad-CAM overlay", ["The image is very dark."],
                       when=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc), case_id="C-0123abcd/2",
                       filename="lesion 7.jpg")
    # fpdf2 compresses page streams; decompress them to read the text.
    import re
    import zlib

    text = b"".join(zlib.decompress(m) for m in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
                    if m[:1] == b"x").decode("latin-1")
    for needle in ("tiny-papercnn", "version test", "2026-01-02", "Melanoma", "55 years", "back",
                   "consider referral / biopsy", "balanced accuracy 0.710", "Decision support only",
                   "Case ID: C-0123abcd/2", "lesion 7.jpg"):
        assert needle in text, needle
    assert text.index("very dark") < text.index("Referral decision") < text.index("Suggested class")


def test_audit_write_read_and_wal(tmp_path):
    db = tmp_path / "audit.sqlite3"
    assert audit.count(db) == 0 and audit.read(db).empty
    rid = audit.write("ab" * 32, {"age": 55.0}, {"top": "mel"}, "m", "1", ["blurry"], path=db)
    assert rid == 1 and audit.count(db) == 1
    row = audit.read(db).iloc[0]
    assert row["image_sha256"] == "ab" * 32 and row["model_name"] == "m" and '"blurry"' in row["quality_flags"]
    assert set(audit.COLUMNS) == set(audit.read(db).columns)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_audit_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(audit.AUDIT_ENV, str(tmp_path / "x.sqlite3"))
    assert audit.db_path() == tmp_path / "x.sqlite3"
    monkeypatch.delenv(audit.AUDIT_ENV)
    assert audit.db_path() == audit.DEFAULT_DB


def test_audit_never_stores_image_bytes(tmp_path):
    db = tmp_path / "audit.sqlite3"
    image = os.urandom(5000)
    audit.write(audit.sha256_bytes(image), {}, {"top": "nv"}, "m", "1", [], path=db)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the database, its WAL and shm files
    assert image[:32] not in stored and audit.sha256_bytes(image).encode() in stored


def test_audit_record_survives_a_crash_right_after_the_write(tmp_path):
    db = tmp_path / "audit.sqlite3"
    script = textwrap.dedent(f"""
        import os, signal
        from core.clinic import audit
        from pathlib import Path
        audit.write("cd" * 32, {{"age": 40.0}}, {{"top": "bkl"}}, "m", "1", [], path=Path({str(db)!r}))
        os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown, no checkpoint
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, timeout=60)
    assert proc.returncode != 0  # killed
    assert audit.count(db) == 1
    assert audit.read(db).iloc[0]["image_sha256"] == "cd" * 32
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_audit_overview_leads_with_what_a_clinician_reads(tmp_path):
    db = tmp_path / "audit.sqlite3"
    audit.write("ef" * 32, {}, {"top": "bcc", "malignant": 0.7, "melanoma": 0.1}, "m", "1", ["blurry"], path=db,
                case_id="C-00000001/1", withheld=False)
    view = audit.overview(audit.read(db))
    assert list(view.columns[:7]) == ["time_utc", "case_id", "suggested class", "malignant risk", "melanoma risk",
                                      "flags", "withheld"]
    assert view.iloc[0]["suggested class"] == "bcc" and view.iloc[0]["flags"] == "blurry"


def test_an_older_audit_database_gains_the_new_columns(tmp_path):
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, time_utc TEXT NOT NULL, "
                     "image_sha256 TEXT NOT NULL, metadata TEXT NOT NULL, outputs TEXT NOT NULL, model_name TEXT NOT "
                     "NULL, model_version TEXT NOT NULL, quality_flags TEXT NOT NULL)")
        conn.execute("INSERT INTO predictions VALUES (1, 't', 'x', '{}', '{}', 'm', '1', '[]')")
    audit.write("ab" * 32, {}, {}, "m", "1", [], path=db, case_id="C-1/1", withheld=True)
    rows = audit.read(db)
    assert len(rows) == 2 and rows.iloc[0]["case_id"] == "C-1/1" and rows.iloc[0]["withheld"] == 1
    assert rows.iloc[1]["case_id"] == ""


def test_headline_notes_never_let_the_headline_contradict_the_referral():
    from core.clinic.report import headline_notes

    card = {**CARD, "class_names": {"mel": "Melanoma", "nv": "Melanocytic nevus"}}
    p = Prediction(probs={"mel": 0.32, "nv": 0.68}, malignant=0.32, melanoma=0.32, top="nv", most_probable="nv",
                   refer_malignant=True, refer_melanoma=True)
    assert any("melanoma cannot be ruled out" in n for n in headline_notes(p, card))
    close = Prediction(probs={"mel": 0.47, "nv": 0.53}, malignant=0.47, melanoma=0.47, top="mel", most_probable="nv",
                       refer_malignant=True, refer_melanoma=True)
    notes = " ".join(headline_notes(close, card))
    assert "Close call" in notes and "larger probability" in notes and "cannot be ruled out" not in notes
