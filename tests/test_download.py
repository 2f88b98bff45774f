"""core.data.download against a local HTTP server that mimics the Dataverse API (never the internet)."""
from __future__ import annotations

import functools
import hashlib
import io
import json
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import download
from core.data.datasets import load_ham10000
from core.errors import InputError

CSV = b"lesion_id,image_id,dx,dx_type,age,sex,localization\nHAM_1,ISIC_1,mel,histo,55,male,back\n" \
      b"HAM_2,ISIC_2,nv,follow_up,40,female,face\n"


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), value, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324


@pytest.fixture
def server(tmp_path: Path):
    """Serves api/datasets/... (the file list) and api/access/datafile/<id> from a folder.

    SimpleHTTPRequestHandler ignores query strings, so the folder layout is the URL path.
    """
    root = tmp_path / "www"
    files = {
        101: ("HAM10000_metadata.tab", CSV, {"originalFileFormat": "text/csv"}),
        102: ("HAM10000_images_part_1.zip", _zip({"ISIC_1.jpg": _jpeg(50), "../evil.jpg": _jpeg(1),
                                                  "notes.txt": b"x"}), {}),
        103: ("HAM10000_images_part_2.zip", _zip({"sub/ISIC_2.jpg": _jpeg(200)}), {}),
        104: ("HAM10000_segmentations_lesion_tschandl.zip", b"unused", {}),
    }
    listing = {"status": "OK", "data": [
        {"label": label, "dataFile": {"id": fid, "filename": label, "checksum": {"type": "MD5", "value": _md5(data)},
                                      **extra}}
        for fid, (label, data, extra) in files.items()]}
    (root / "api/datasets/:persistentId/versions/:latest").mkdir(parents=True)
    (root / "api/datasets/:persistentId/versions/:latest/files").write_text(json.dumps(listing))
    (root / "api/access/datafile").mkdir(parents=True)
    for fid, (_, data, _) in files.items():
        (root / f"api/access/datafile/{fid}").write_bytes(data)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass


def test_download_unpacks_a_loadable_ham10000(server, tmp_path):
    url, _ = server
    dest = download.download_ham10000(tmp_path / "ham", server=url)
    assert (dest / "HAM10000_metadata.csv").read_bytes() == CSV
    assert sorted(p.name for p in (dest / "HAM10000_images_part_1").glob("*.jpg")) == ["ISIC_1.jpg", "evil.jpg"]
    assert not (tmp_path / "evil.jpg").exists()  # archive paths are never followed
    assert not list(dest.glob("*.zip"))  # archives removed after unpacking
    frame, _ = load_ham10000(dest)
    assert frame["image_path"].notna().all() and len(frame) == 2


def test_second_run_skips_completed_files(server, tmp_path):
    url, root = server
    dest = download.download_ham10000(tmp_path / "ham", server=url)
    for fid in (101, 102, 103):  # a re-download would now fail its checksum
        (root / f"api/access/datafile/{fid}").write_bytes(b"changed")
    download.download_ham10000(dest, server=url)
    assert (dest / "HAM10000_metadata.csv").read_bytes() == CSV


def test_corrupted_download_is_refused(server, tmp_path):
    url, root = server
    (root / "api/access/datafile/102").write_bytes(b"truncated")
    with pytest.raises(InputError, match="MD5 mismatch"):
        download.download_ham10000(tmp_path / "ham", server=url)
    assert not list((tmp_path / "ham").glob("*.part"))


def test_unreachable_server_and_bad_listing(server, tmp_path):
    url, root = server
    with pytest.raises(InputError, match="answered 404"):
        download.list_files(url + "/nothing", download.HAM10000_DOI)
    (root / "api/datasets/:persistentId/versions/:latest/files").write_text(json.dumps({"status": "OK", "data": []}))
    with pytest.raises(InputError, match="has no HAM10000_metadata"):
        download.download_ham10000(tmp_path / "ham", server=url)


def test_cli_exit_codes(server, tmp_path):
    url, _ = server
    assert download.main(["--dest", str(tmp_path / "ham"), "--server", url]) == 0
    assert download.main(["--dest", str(tmp_path / "x"), "--server", "http://127.0.0.1:9"]) == 2
