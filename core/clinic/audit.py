"""The audit log: one SQLite row per analysis shown, never the image itself.

Every write is one short `BEGIN IMMEDIATE` transaction on its own short-lived connection (safe
from any Streamlit thread and from several server processes at once): the write lock is taken
first, waiting up to BUSY_TIMEOUT_S for other writers, so no transaction has to be retried
halfway. WAL mode with `synchronous=FULL`: a record that `write` returned from is on disk (the
WAL is fsynced at every commit), so it survives the process being killed, or the machine losing
power, the next instant. NORMAL would survive a killed process but not a power cut, and one fsync
per analysis (a few milliseconds, against the analysis's tens) is cheap.

Stored: UTC time, the image's sha256, the metadata, the outputs, the model's name and version,
the quality flags, the case ID and a random per-browser-session ID (never an IP address), so a
session can be shown only its own rows. Rows are unique per (session, case): writing the same
case twice returns the first row's id. Set the database path with DERMO_AUDIT_DB (default:
audit/audit.sqlite3 in the repo, which is git-ignored; its folder is created readable by the
server's user only). Every failure is raised as AuditError, whose message says why in words a
clinician can pass on to IT.
"""
from __future__ import annotations

import datetime as dt
import errno
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import REPO_ROOT

log = logging.getLogger(__name__)

AUDIT_ENV = "DERMO_AUDIT_DB"
#: Environment variable holding the administrator password (Streamlit secrets' `admin_password` wins).
ADMIN_ENV = "DERMO_ADMIN_PASSWORD"
DEFAULT_DB = REPO_ROOT / "audit" / "audit.sqlite3"
#: How long a writer waits for another writer's lock before giving up.
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    metadata TEXT NOT NULL,
    outputs TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    quality_flags TEXT NOT NULL,
    case_id TEXT NOT NULL DEFAULT '',
    withheld INTEGER NOT NULL DEFAULT 0,
    session_id TEXT NOT NULL DEFAULT ''
)
"""
_INDEX = "predictions_session_case"
COLUMNS = ("id", "time_utc", "image_sha256", "metadata", "outputs", "model_name", "model_version", "quality_flags",
           "case_id", "withheld", "session_id")
#: Columns added after the first release: an older database gains them on first use.
_ADDED = {"case_id": "TEXT NOT NULL DEFAULT ''", "withheld": "INTEGER NOT NULL DEFAULT 0",
          "session_id": "TEXT NOT NULL DEFAULT ''"}


class AuditError(Exception):
    """The audit log could not be written or read; the message says why, for the page."""


def db_path() -> Path:
    return Path(os.environ.get(AUDIT_ENV, DEFAULT_DB))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def admin_allowed(entered: str | None, configured: str | None) -> bool:
    """True only when an administrator password is configured and `entered` is it (constant-time
    comparison, so the time taken does not tell how much of a guess was right)."""
    if not configured or not entered:
        return False
    return hmac.compare_digest(entered.encode(), configured.encode())


class AttemptLimit:
    """At most `attempts` wrong administrator passwords per `window_s` seconds across the whole
    server (thread-safe): a guesser gets a few tries a minute, not thousands. The price: someone
    guessing can keep the administrator waiting, who can still read the database on the server."""

    def __init__(self, attempts: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.attempts, self.window_s, self.clock = attempts, window_s, clock
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    def wait_s(self) -> float:
        """Seconds until a password may be tried again (0: now)."""
        with self._lock:
            now = self.clock()
            while self._failures and now - self._failures[0] >= self.window_s:
                self._failures.popleft()
            return self._failures[0] + self.window_s - now if len(self._failures) >= self.attempts else 0.0

    def failed(self) -> None:
        with self._lock:
            self._failures.append(self.clock())


# -- failures, in words ------------------------------------------------------------------------
_READ_ONLY = "the server may not write to {path} (a read-only folder, file or disk)"
_FULL = "the disk holding {path} is full"
_BUSY = f"other sessions kept {{path}} locked for more than {BUSY_TIMEOUT_S:g} seconds"
_CANT_OPEN = "{path} cannot be opened or created (its folder is missing, is a file, or may not be written)"
_DAMAGED = "{path} is damaged or is not an audit database"
_DISK = "the disk holding {path} failed to write (it may be full or failing)"
_BY_SQLITE_NAME = (("SQLITE_READONLY", _READ_ONLY), ("SQLITE_PERM", _READ_ONLY), ("SQLITE_FULL", _FULL),
                   ("SQLITE_BUSY", _BUSY), ("SQLITE_LOCKED", _BUSY), ("SQLITE_CANTOPEN", _CANT_OPEN),
                   ("SQLITE_NOTADB", _DAMAGED), ("SQLITE_CORRUPT", _DAMAGED), ("SQLITE_IOERR", _DISK))
_BY_SQLITE_TEXT = (("readonly", _READ_ONLY), ("disk is full", _FULL), ("locked", _BUSY),
                   ("unable to open", _CANT_OPEN), ("not a database", _DAMAGED), ("malformed", _DAMAGED),
                   ("disk i/o error", _DISK))
_BY_ERRNO = {errno.EROFS: _READ_ONLY, errno.EACCES: _READ_ONLY, errno.EPERM: _READ_ONLY, errno.ENOSPC: _FULL,
             errno.EDQUOT: _FULL, errno.ENOTDIR: _CANT_OPEN, errno.EEXIST: _CANT_OPEN, errno.EIO: _DISK}


def describe_failure(exc: BaseException, path: Path) -> str:
    """Why the audit database at `path` failed, in words (used as AuditError's message)."""
    template = None
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        template = next((t for prefix, t in _BY_SQLITE_NAME if name.startswith(prefix)), None)
        text = str(exc).lower()
        template = template or next((t for needle, t in _BY_SQLITE_TEXT if needle in text), None)
    elif isinstance(exc, OSError):
        template = _BY_ERRNO.get(exc.errno)
    return (template or f"{{path}} failed ({exc.__class__.__name__}: {exc})").format(path=path)


@contextmanager
def _failures(path: Path) -> Iterator[None]:
    """sqlite3 and OS errors -> AuditError with a readable reason (the log keeps the original)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        log.error("audit database %s failed: %r", path, exc)
        raise AuditError(describe_failure(exc, path)) from exc


# -- connections ---------------------------------------------------------------------------
@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken at the start (waiting up to the busy timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (e.g. a full disk)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _schema_current(conn: sqlite3.Connection) -> bool:
    present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    indexed = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (_INDEX,)).fetchone()
    return set(COLUMNS) <= present and indexed is not None


def _migrate(conn: sqlite3.Connection) -> None:
    """Create the table, add missing columns and the index, under the write lock (several
    processes may open a new or older database at the same moment)."""
    with _immediate(conn):
        conn.execute(_SCHEMA)
        present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
        for column, kind in _ADDED.items():
            if column not in present:
                conn.execute(f"ALTER TABLE predictions ADD COLUMN {column} {kind}")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {_INDEX} ON predictions (session_id, case_id)")


def _open(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL, the
    busy timeout, and the current schema."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if not _schema_current(conn):
            _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


# -- writing and reading ---------------------------------------------------------------------
def write(
    image_sha256: str,
    metadata: dict[str, Any],
    outputs: dict[str, Any],
    model_name: str,
    model_version: str,
    quality_flags: list[str],
    path: Path | None = None,
    case_id: str = "",
    withheld: bool = False,
    session_id: str = "",
) -> int:
    """Append one record in one committed transaction; returns its id, or AuditError.

    `case_id` names the case (and its version, e.g. C-1a2b3c4d/2) as the PDF report does; a case
    already logged for this `session_id` is not logged twice (its id is returned). `withheld`:
    the output was not shown."""
    path = path or db_path()
    row = (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        image_sha256,
        json.dumps(metadata, sort_keys=True),
        json.dumps(outputs, sort_keys=True),
        model_name,
        model_version,
        json.dumps(list(quality_flags)),
        case_id,
        int(bool(withheld)),
        session_id,
    )
    with _failures(path), closing(_open(path)) as conn, _immediate(conn):
        found = conn.execute("SELECT id FROM predictions WHERE session_id = ? AND case_id = ?",
                             (session_id, case_id)).fetchone() if case_id else None
        if found is not None:
            return int(found[0])
        cursor = conn.execute(
            "INSERT INTO predictions (time_utc, image_sha256, metadata, outputs, model_name, model_version, "
            "quality_flags, case_id, withheld, session_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        record_id = int(cursor.lastrowid)
    log.info("audit record %d written (%s, image %s...)", record_id, model_name, image_sha256[:12])
    return record_id


def _where(session_id: str | None) -> tuple[str, tuple[str, ...]]:
    return (" WHERE session_id = ?", (session_id,)) if session_id is not None else ("", ())


def read(path: Path | None = None, limit: int | None = None, session_id: str | None = None) -> pd.DataFrame:
    """The log, newest first (an empty frame with the columns when there is no log yet); with
    `session_id`, only that session's rows."""
    path = path or db_path()
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    where, params = _where(session_id)
    query = f"SELECT * FROM predictions{where} ORDER BY id DESC" + (" LIMIT ?" if limit else "")
    with _failures(path), closing(_open(path)) as conn:
        cursor = conn.execute(query, params + ((int(limit),) if limit else ()))
        return pd.DataFrame(cursor.fetchall(), columns=[d[0] for d in cursor.description])


def count(path: Path | None = None, session_id: str | None = None) -> int:
    """How many records (with `session_id`, that session's)."""
    path = path or db_path()
    if not path.is_file():
        return 0
    where, params = _where(session_id)
    with _failures(path), closing(_open(path)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM predictions{where}", params).fetchone()[0])


def overview(frame: pd.DataFrame) -> pd.DataFrame:
    """The log as a clinician reads it: time, case, suggested class, risks and flags first, then the rest."""
    outputs = frame["outputs"].map(lambda text: json.loads(text) if text else {})
    front = pd.DataFrame({
        "time_utc": frame["time_utc"], "case_id": frame["case_id"],
        "suggested class": outputs.map(lambda o: o.get("top")),
        "malignant risk": outputs.map(lambda o: o.get("malignant")),
        "melanoma risk": outputs.map(lambda o: o.get("melanoma")),
        "flags": frame["quality_flags"].map(lambda text: ", ".join(json.loads(text)) if text else ""),
        "withheld": frame["withheld"].astype(bool),
    })
    rest = frame[[c for c in frame.columns if c not in ("time_utc", "case_id", "quality_flags", "withheld")]]
    return pd.concat([front, rest], axis=1)
