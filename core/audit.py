"""The audit log: one SQLite row per prediction shown, never the image itself.

Each record is written in its own transaction on its own short-lived connection (safe from
any Streamlit thread), in WAL mode with `synchronous=FULL`, so a record that `write`
returned from survives the app process being killed the next instant. Stored: UTC time,
the image's sha256, the metadata, the outputs, the model's name and version and the quality
flags. Set the database path with DERMO_AUDIT_DB (default: audit/audit.sqlite3 in the repo,
which is git-ignored).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import REPO_ROOT

log = logging.getLogger(__name__)

AUDIT_ENV = "DERMO_AUDIT_DB"
DEFAULT_DB = REPO_ROOT / "audit" / "audit.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_utc TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    metadata TEXT NOT NULL,
    outputs TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    quality_flags TEXT NOT NULL
)
"""
COLUMNS = ("id", "time_utc", "image_sha256", "metadata", "outputs", "model_name", "model_version", "quality_flags")


def db_path() -> Path:
    return Path(os.environ.get(AUDIT_ENV, DEFAULT_DB))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(_SCHEMA)
    return conn


def write(
    image_sha256: str,
    metadata: dict[str, Any],
    outputs: dict[str, Any],
    model_name: str,
    model_version: str,
    quality_flags: list[str],
    path: Path | None = None,
) -> int:
    """Append one record in one committed transaction; returns its id."""
    row = (
        dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        image_sha256,
        json.dumps(metadata, sort_keys=True),
        json.dumps(outputs, sort_keys=True),
        model_name,
        model_version,
        json.dumps(list(quality_flags)),
    )
    with closing(_connect(path or db_path())) as conn, conn:
        cursor = conn.execute(
            "INSERT INTO predictions (time_utc, image_sha256, metadata, outputs, model_name, model_version, "
            "quality_flags) VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        record_id = int(cursor.lastrowid)
    log.info("audit record %d written (%s, image %s...)", record_id, model_name, image_sha256[:12])
    return record_id


def read(path: Path | None = None, limit: int | None = None) -> pd.DataFrame:
    """The log, newest first (an empty frame with the columns when there is no log yet)."""
    path = path or db_path()
    if not path.is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    query = "SELECT * FROM predictions ORDER BY id DESC" + (" LIMIT ?" if limit else "")
    with closing(_connect(path)) as conn:
        return pd.read_sql_query(query, conn, params=(int(limit),) if limit else ())


def count(path: Path | None = None) -> int:
    path = path or db_path()
    if not path.is_file():
        return 0
    with closing(_connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
