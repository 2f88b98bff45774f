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
    quality_flags TEXT NOT NULL,
    case_id TEXT NOT NULL DEFAULT '',
    withheld INTEGER NOT NULL DEFAULT 0
)
"""
COLUMNS = ("id", "time_utc", "image_sha256", "metadata", "outputs", "model_name", "model_version", "quality_flags",
           "case_id", "withheld")
#: Columns added after the first release: an older database gains them on first use.
_ADDED = {"case_id": "TEXT NOT NULL DEFAULT ''", "withheld": "INTEGER NOT NULL DEFAULT 0"}


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
    present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    for column, kind in _ADDED.items():
        if column not in present:
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {column} {kind}")
    return conn


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
) -> int:
    """Append one record in one committed transaction; returns its id. `case_id` names the case
    (and its version, e.g. C-1a2b3c4d/2) as the PDF report does; `withheld`: the output was not shown."""
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
    )
    with closing(_connect(path or db_path())) as conn, conn:
        cursor = conn.execute(
            "INSERT INTO predictions (time_utc, image_sha256, metadata, outputs, model_name, model_version, "
            "quality_flags, case_id, withheld) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
