"""The Diagnose page between users and under audit faults (AppTest): each browser session sees and
exports only its own analyses, the full log only with the configured administrator password; an
audit database that cannot be written leaves the analysis shown and says it was not logged; an
analysis leaves no image file behind."""
from __future__ import annotations

import io
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.clinic import audit
from core.config import REPO_ROOT
from tests.test_page_diagnose import PAGE, TIMEOUT, image_bytes, insist, upload

PASSWORD = "correct horse battery staple"


@pytest.fixture
def env(default_bundle, tmp_path, monkeypatch) -> Path:
    """The served model, a fresh audit database and no administrator password; returns the database."""
    monkeypatch.setenv("DERMO_MODEL_DIR", str(default_bundle))
    monkeypatch.setenv(audit.AUDIT_ENV, str(tmp_path / "audit" / "audit.sqlite3"))
    monkeypatch.delenv(audit.ADMIN_ENV, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    return tmp_path / "audit" / "audit.sqlite3"


def session(secrets: dict | None = None) -> AppTest:
    """One browser session (the model stays cached between sessions, as on the server)."""
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.secrets.update(secrets or {})
    at.run()
    assert not at.exception
    return at


def expander(at: AppTest, start: str):
    return next(e for e in at.expander if e.label.startswith(start))


def own_table(at: AppTest):
    return expander(at, "Audit log: your analyses").dataframe[0].value


def shown(at: AppTest) -> bool:
    return len(at.get("plotly_chart")) == 1 and at.metric[0].label == "Suggested class"


def test_each_session_sees_only_its_own_analyses(env, lesion_jpeg):
    first = insist(upload(session(), ("mine.jpg", lesion_jpeg)))
    second = insist(upload(session(), ("theirs.jpg", image_bytes(Image.open(io.BytesIO(lesion_jpeg)).rotate(180), "JPEG", quality=95))))
    rows = audit.read(env)
    assert len(rows) == 2 and rows["session_id"].nunique() == 2
    assert all(len(s) == 32 and set(s) <= set("0123456789abcdef") for s in rows["session_id"])  # random, not an IP
    for at in (first, second):
        at.run()
        mine = own_table(at)
        assert len(mine) == 1 and mine["session_id"].iloc[0] == at.session_state["audit_session_id"]
        assert any(f"Case {mine['case_id'].iloc[0]}:" in h.value for h in at.subheader)
        assert "diagnose_audit_csv" in {b.key for b in at.get("download_button")}
        admin = expander(at, "Administrator")
        assert any("no administrator password is configured" in c.value for c in admin.caption)
        assert not admin.text_input and not admin.dataframe
        assert "diagnose_audit_full_csv" not in {b.key for b in at.get("download_button")}


@pytest.mark.parametrize("where", ["secrets", "environment"])
def test_the_full_log_needs_the_configured_password(env, lesion_jpeg, monkeypatch, where):
    for name in ("a.jpg", "b.jpg"):
        insist(upload(session(), (name, lesion_jpeg)))
    if where == "environment":
        monkeypatch.setenv(audit.ADMIN_ENV, PASSWORD)
    at = session({"admin_password": PASSWORD} if where == "secrets" else None)
    assert own_table(at).empty  # this session analysed nothing
    box = expander(at, "Administrator").text_input(key="diagnose_admin_password")
    box.input(PASSWORD[:-1]).run()
    admin = expander(at, "Administrator")
    assert any("not the administrator password" in e.value for e in admin.error) and not admin.dataframe
    admin.text_input(key="diagnose_admin_password").input(PASSWORD).run()
    admin = expander(at, "Administrator")
    assert not admin.error and len(admin.dataframe[0].value) == 2
    assert "diagnose_audit_full_csv" in {b.key for b in at.get("download_button")}


def _read_only(monkeypatch) -> None:
    real = audit._open

    def opened(path: Path) -> sqlite3.Connection:
        conn = real(path)
        conn.execute("PRAGMA query_only = ON")  # SQLite answers as for a read-only file or disk
        return conn

    monkeypatch.setattr(audit, "_open", opened)


@pytest.mark.parametrize("fault, reason", [
    ("read-only", "may not write to"),
    ("damaged", "is damaged or is not an audit database"),
    ("no folder", "cannot be opened or created"),
])
def test_an_unwritable_audit_log_still_shows_the_analysis(env, lesion_jpeg, tmp_path, monkeypatch, fault, reason):
    if fault == "read-only":
        audit.write("ab" * 32, {}, {}, "m", "1", [], path=env)
        _read_only(monkeypatch)
    elif fault == "damaged":
        env.parent.mkdir()
        env.write_bytes(b"not a database " * 500)
    else:
        env.parent.write_text("a file where the audit folder should be")
    at = insist(upload(session(), ("lesion.jpg", lesion_jpeg)))
    assert not at.exception and shown(at)  # the analysis is shown
    warning = " ".join(w.value for w in at.warning if "Not logged" in w.value)
    assert "was **not** written to the audit log" in warning and reason in warning and "IT administrator" in warning
    if fault == "damaged":
        assert any("The audit log cannot be shown" in w.value and reason in w.value for w in at.warning)
    else:  # a read-only log can still be read; where no log can exist, there is nothing to show
        assert own_table(at).empty


def test_an_analysis_leaves_no_image_file_behind(env, default_bundle, lesion_jpeg, tmp_path, monkeypatch):
    """Upload, analyse, heatmaps, another CAM method and the PDF report, with the working folder and
    TMPDIR inside tmp_path: the only files written are the audit database's."""
    from core.model.bundle import read_card
    from core.clinic.report import build_report

    for folder in ("cwd", "tmp"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile re-reads TMPDIR
    at = insist(upload(session(), ("lesion.jpg", lesion_jpeg)))
    at.selectbox(key="diagnose_cam_method").set_value("EigenCAM").run()
    assert not at.exception and shown(at) and audit.count(env) == 1
    (case,) = at.session_state["diagnose_state"]["cases"].values()  # what the report button renders
    pdf = build_report(case.prediction, read_card(default_bundle), case.array, case.array, "overlay",
                       case.quality.messages, case_id="C-1/1", filename="lesion.jpg")
    assert pdf.startswith(b"%PDF")
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert set(written) <= {"audit/audit.sqlite3", "audit/audit.sqlite3-wal", "audit/audit.sqlite3-shm"}, written


def test_the_page_serves_on_a_log_left_by_a_killed_writer(env, lesion_jpeg):
    """A writer killed with SIGKILL mid-stream (as a crashed server would) leaves a log the page
    opens, shows nothing of to another session, and appends to."""
    from tests.test_audit_faults import WRITER

    env.parent.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(env), "killed"], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        committed = [int(writer.stdout.readline()) for _ in range(20)]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    before = audit.count(env)
    assert set(committed) <= set(audit.read(env)["id"])
    at = insist(upload(session(), ("lesion.jpg", lesion_jpeg)))
    assert not at.exception and shown(at) and not [w for w in at.warning if "Not logged" in w.value]
    assert len(own_table(at)) == 1 and audit.count(env) == before + 1


def test_guessing_the_password_is_slowed_down(env):
    at = session({"admin_password": PASSWORD})
    for guess in range(5):
        expander(at, "Administrator").text_input(key="diagnose_admin_password").input(f"guess {guess}").run()
        assert any("not the administrator password" in e.value for e in expander(at, "Administrator").error)
    expander(at, "Administrator").text_input(key="diagnose_admin_password").input(PASSWORD).run()
    admin = expander(at, "Administrator")
    assert any("Too many wrong passwords" in e.value for e in admin.error) and not admin.dataframe
