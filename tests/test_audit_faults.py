"""core.clinic.audit under faults: threads and processes writing at once, SIGKILL mid-write, a read-only,
full, damaged or uncreatable database, one row per (session, case), and the administrator check."""
from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.clinic import audit
from core.config import REPO_ROOT

WRITER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from core.clinic import audit

    db, name = Path(sys.argv[1]), sys.argv[2]
    lock = threading.Lock()

    def loop(thread):
        i = 0
        while True:
            i += 1
            rid = audit.write("ab" * 32, {"age": 40.0}, {"top": "nv"}, "m", "1", [], path=db,
                              case_id=f"C-{thread}-{i}/1", session_id=name)
            with lock:  # reported only after the commit returned
                sys.stdout.write(f"{rid}\\n")
                sys.stdout.flush()

    for t in range(2):
        threading.Thread(target=loop, args=(t,), daemon=True).start()
    threading.Event().wait()
""")


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _keys(db: Path) -> list[tuple[str, str]]:
    frame = audit.read(db)
    return list(zip(frame["session_id"], frame["case_id"]))


def test_threads_on_a_new_database_write_exactly_one_row_per_analysis(tmp_path):
    """Eight threads open a database that does not exist yet at the same moment (schema creation
    races included); each analysis is written twice (a page rerun) and logged once."""
    db = tmp_path / "audit.sqlite3"
    start, ids, errors = threading.Barrier(8), [], []

    def worker(t: int) -> None:
        start.wait()
        try:
            for i in range(15):
                first = audit.write("cd" * 32, {}, {"top": "mel"}, "m", "1", [], path=db, case_id=f"C-{i}/1",
                                    session_id=f"s{t}")
                again = audit.write("cd" * 32, {}, {"top": "mel"}, "m", "1", [], path=db, case_id=f"C-{i}/1",
                                    session_id=f"s{t}")
                assert first == again
                ids.append(first)
        except Exception as exc:  # noqa: BLE001 - reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert audit.count(db) == 120 and len(set(ids)) == 120
    assert len(set(_keys(db))) == 120
    assert _integrity(db) == "ok"


def _reader(stream, out: list[int]) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.extend(int(line) for line in stream), daemon=True)
    thread.start()
    return thread


def test_sigkill_while_several_processes_write_loses_nothing_committed(tmp_path):
    """Four writer processes (two threads each) write; one is killed with SIGKILL mid-stream, then
    the rest (the server dying). Every id a writer saw committed is in the log, the log is intact,
    no analysis is in it twice, and it takes writes again."""
    db = tmp_path / "audit.sqlite3"
    audit.write("00" * 32, {}, {}, "m", "1", [], path=db)  # the schema exists before the race
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"w{k}"], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True) for k in range(4)]
    reported: list[list[int]] = [[] for _ in procs]
    readers = [_reader(p.stdout, out) for p, out in zip(procs, reported)]
    try:
        deadline = time.monotonic() + 120
        while min(len(r) for r in reported) < 10:
            assert time.monotonic() < deadline, f"writers too slow: {[len(r) for r in reported]}"
            assert all(p.poll() is None for p in procs), "a writer died on its own"
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGKILL)
        at_kill = [len(r) for r in reported]
        while min(len(r) for r in reported[1:]) < min(at_kill[1:]) + 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        for reader in readers:
            reader.join(timeout=30)
    assert all(p.returncode == -signal.SIGKILL for p in procs)

    assert _integrity(db) == "ok"
    frame = audit.read(db)
    committed = {rid for r in reported for rid in r}
    assert committed <= set(frame["id"])  # nothing a writer saw committed is lost
    assert len(frame) <= len(committed) + 1 + len(procs) * 2  # at most one unreported commit per thread
    assert len(set(_keys(db))) == len(frame)  # one row per analysis
    rid = audit.write("ef" * 32, {}, {}, "m", "1", [], path=db, case_id="C-after/1", session_id="new")
    assert rid > max(frame["id"]) and audit.count(db) == len(frame) + 1


def _with_pragma(monkeypatch, pragma: str) -> None:
    """Every connection core.clinic.audit opens gets `pragma` (SQLite then fails as a real disk would)."""
    real = audit._open

    def opened(path: Path) -> sqlite3.Connection:
        conn = real(path)
        conn.execute(pragma.format(pages=conn.execute("PRAGMA page_count").fetchone()[0]))
        return conn

    monkeypatch.setattr(audit, "_open", opened)


def test_a_read_only_database_refuses_writes_with_a_reason_and_still_reads(tmp_path, monkeypatch):
    db = tmp_path / "audit.sqlite3"
    audit.write("ab" * 32, {}, {}, "m", "1", [], path=db, case_id="C-1/1", session_id="s")
    _with_pragma(monkeypatch, "PRAGMA query_only = ON")
    with pytest.raises(audit.AuditError, match="may not write to .*read-only"):
        audit.write("cd" * 32, {}, {}, "m", "1", [], path=db, case_id="C-2/1", session_id="s")
    assert audit.count(db) == 1 and list(audit.read(db, session_id="s")["case_id"]) == ["C-1/1"]


def test_a_full_disk_refuses_the_write_and_leaves_the_log_intact(tmp_path, monkeypatch):
    db = tmp_path / "audit.sqlite3"
    audit.write("ab" * 32, {}, {}, "m", "1", [], path=db)
    with monkeypatch.context() as patched:
        _with_pragma(patched, "PRAGMA max_page_count = {pages}")  # not one page more
        with pytest.raises(audit.AuditError, match="is full"):
            audit.write("cd" * 32, {"note": "x" * 50_000}, {}, "m", "1", [], path=db)
    assert audit.count(db) == 1 and _integrity(db) == "ok"
    audit.write("cd" * 32, {"note": "x" * 50_000}, {}, "m", "1", [], path=db)  # space again: it writes
    assert audit.count(db) == 2


def test_a_database_that_cannot_be_created_or_is_damaged_gets_a_reason(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit folder should be")
    with pytest.raises(audit.AuditError, match="cannot be opened or created"):
        audit.write("ab" * 32, {}, {}, "m", "1", [], path=blocker / "audit.sqlite3")
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"this is not SQLite " * 300)
    for call in (lambda: audit.write("ab" * 32, {}, {}, "m", "1", [], path=damaged), lambda: audit.read(damaged),
                 lambda: audit.count(damaged)):
        with pytest.raises(audit.AuditError, match="damaged or is not an audit database"):
            call()


@pytest.mark.parametrize("code, words", [(errno.EROFS, "may not write"), (errno.EACCES, "may not write"),
                                         (errno.ENOSPC, "is full"), (errno.ENOTDIR, "cannot be opened"),
                                         (errno.EIO, "failed to write")])
def test_os_errors_are_put_in_words(code, words):
    assert words in audit.describe_failure(OSError(code, os.strerror(code)), Path("/srv/audit.sqlite3"))


@pytest.mark.parametrize("message, words", [("disk I/O error", "failed to write"), ("database is locked", "locked"),
                                            ("database or disk is full", "is full"), ("something new", "failed (")])
def test_sqlite_errors_without_a_code_are_put_in_words(message, words):
    assert words in audit.describe_failure(sqlite3.OperationalError(message), Path("/srv/audit.sqlite3"))


def test_a_session_reads_only_its_own_rows(tmp_path):
    db = tmp_path / "audit.sqlite3"
    for session, case in (("a", "C-1/1"), ("b", "C-1/1"), ("a", "C-2/1")):  # case IDs may coincide across sessions
        audit.write("ab" * 32, {}, {"top": "nv"}, "m", "1", [], path=db, case_id=case, session_id=session)
    assert list(audit.read(db, session_id="a")["case_id"]) == ["C-2/1", "C-1/1"]
    assert audit.count(db, session_id="b") == 1 and audit.count(db) == 3
    assert audit.read(db, session_id="nobody").empty


def test_the_administrator_password_check():
    assert not audit.admin_allowed("anything", None) and not audit.admin_allowed("", "")
    assert not audit.admin_allowed(None, "s3cret") and not audit.admin_allowed("s3cre", "s3cret")
    assert audit.admin_allowed("s3cret", "s3cret") and audit.admin_allowed("pässwört", "pässwört")


def test_wrong_administrator_passwords_are_limited_per_window():
    now = [0.0]
    limit = audit.AttemptLimit(attempts=3, window_s=60, clock=lambda: now[0])
    for t in (0, 10, 20):
        now[0] = t
        assert limit.wait_s() == 0
        limit.failed()
    now[0] = 30
    assert limit.wait_s() == 30  # the first failure leaves the window at 60
    now[0] = 60
    assert limit.wait_s() == 0
