"""The real server killed with SIGKILL while several sessions analyse (and so write the audit log),
then started again on the same log: the database passes `PRAGMA integrity_check`, every analysis a
session saw logged (its own-log count went up) is still there, and the app serves again."""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest

from core.clinic.audit import sha256_bytes
from core.inference import Predictor
from tests.live_app import DiagnosePage, browser_missing, chromium, expected_readout, ham_lesions, live_app

pytestmark = pytest.mark.browser

SESSIONS = 2
#: Analyses every session must have seen logged before the kill (more keep running while it lands).
BEFORE_KILL = 2


def test_sigkill_mid_analyses_loses_no_row_a_session_saw_logged(tmp_path, default_bundle, ham_dir):
    if reason := browser_missing():
        pytest.skip(reason)
    predictor = Predictor.load(default_bundle)
    lesions = [lesion for lesion in ham_lesions(ham_dir, 40, predictor.encoder.accepted_sites, seed=7)
               if expected_readout(predictor, lesion) is not None]
    db = tmp_path / "audit.sqlite3"
    env = {"DERMO_MODEL_DIR": str(default_bundle), "DERMO_AUDIT_DB": str(db)}
    seen: list[str] = []  # sha256 of each image whose row a session saw counted in its own log
    counts = [0] * SESSIONS
    problems: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def session(index: int, page: DiagnosePage) -> None:
        for lesion in lesions[index:-1:SESSIONS]:  # the last lesion is kept for after the restart
            if stop.is_set():
                return
            try:
                page.remove_upload()
                page.set_metadata(lesion)
                page.upload(lesion)
                logged = page.logged()
            except Exception:  # the server went away under it
                return
            with lock:
                if logged != counts[index] + 1:
                    problems.append(f"session {index}: its own log went from {counts[index]} to {logged} analyses")
                counts[index] = logged
                seen.append(sha256_bytes(lesion.image.read_bytes()))

    drivers = []
    try:
        with live_app(env, tmp_path / "first.log") as app:
            for _ in range(SESSIONS):
                drivers.append(chromium())
            pages = [DiagnosePage(driver, app.url) for driver in drivers]
            for page in pages:
                page.open()
            threads = [threading.Thread(target=session, args=(i, page), daemon=True) for i, page in enumerate(pages)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 300
            while min(counts) < BEFORE_KILL and all(t.is_alive() for t in threads) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert min(counts) >= BEFORE_KILL, f"the sessions logged {counts} analyses before the kill"
            time.sleep(1.5)  # into the next analyses: uploads, model runs and audit writes in flight
            os.killpg(app.pid, signal.SIGKILL)
            stop.set()
            for driver in drivers:  # ends the sessions' waits on a dead server
                driver.quit()
            drivers.clear()
            for thread in threads:
                thread.join(60)
        assert problems == []
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = [row[0] for row in con.execute("SELECT image_sha256 FROM predictions")]
        assert seen and set(seen) <= set(stored), "a row a session saw logged is gone after the kill"
        assert len(stored) >= len(seen)

        with live_app(env, tmp_path / "second.log") as app:  # the same log, a fresh server
            drivers.append(chromium())
            page = DiagnosePage(drivers[0], app.url)
            page.open()
            page.set_metadata(lesions[-1])
            _, readout = page.upload(lesions[-1])
            assert readout == expected_readout(predictor, lesions[-1])
            assert page.logged() == 1
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == len(stored) + 1
    finally:
        for driver in drivers:
            driver.quit()
