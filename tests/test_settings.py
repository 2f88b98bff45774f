"""The server's settings: .streamlit/config.toml and `make run`'s address."""
from __future__ import annotations

import subprocess
import tomllib

import pytest

from core.config import REPO_ROOT


@pytest.fixture(scope="module")
def config() -> dict:
    return tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())


def test_xsrf_protection_on_usage_statistics_off_no_tracebacks(config):
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"].get("enableCORS", True) is True  # XSRF protection needs CORS protection on
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["showErrorDetails"] == "none"


def test_uploads_are_limited(config):
    assert isinstance(config["server"]["maxUploadSize"], int) and 1 <= config["server"]["maxUploadSize"] <= 50


def test_no_source_watching_on_the_server(config):
    """The watcher walks every loaded module on every script run, on the event loop all sessions share."""
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"].get("runOnSave", False) is False


def test_the_secrets_file_is_never_committed():
    assert "/.streamlit/secrets.toml" in (REPO_ROOT / ".gitignore").read_text().splitlines()


def _make_run(*args: str) -> str:
    # -n: print the commands only; the venv's stamp is treated as up to date (-o), so nothing is installed.
    out = subprocess.run(["make", "-n", "-o", ".venv/.installed", "run", *args], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True).stdout
    return next(line for line in out.splitlines() if "streamlit run app.py" in line)


def test_make_run_binds_to_localhost_unless_told_otherwise():
    assert "--server.address 127.0.0.1" in _make_run()
    assert "--server.address 0.0.0.0 --server.port 8600" in _make_run("ADDRESS=0.0.0.0", "PORT=8600")
