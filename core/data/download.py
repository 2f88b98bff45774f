"""Download HAM10000 from the Harvard Dataverse (doi:10.7910/DVN/DBW86T) into a local folder.

    python -m core.data.download --dest ~/data/ham10000      # about 2.6 GB; then
    DERMO_DATA_DIR=~/data streamlit run app.py

It asks the Dataverse API for the dataset's file list, downloads the metadata table (as the
original CSV) and the two image archives, checks each file's MD5 against the list, and unpacks
the images into HAM10000_images_part_1/ and HAM10000_images_part_2/, the layout
`core.data.datasets.load_ham10000` reads. Files already present with the right checksum are skipped, so
an interrupted download resumes by running the command again. HAM10000 is CC BY-NC 4.0.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.errors import InputError

log = logging.getLogger(__name__)

DATAVERSE = "https://dataverse.harvard.edu"
HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
METADATA_STEM = "HAM10000_metadata"
IMAGE_ARCHIVES = ("HAM10000_images_part_1", "HAM10000_images_part_2")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TIMEOUT = 60


def _get(url: str) -> Any:
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT)  # noqa: S310 (https by default; the URL is ours)
    except urllib.error.HTTPError as exc:
        raise InputError(f"The server answered {exc.code} {exc.reason} for {url}.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise InputError(f"Could not reach {url} ({exc}). Check the internet connection or --server.") from None


def list_files(server: str, doi: str) -> list[dict[str, Any]]:
    """The dataset's files as the Dataverse API lists them (label + dataFile with id and checksum)."""
    query = urllib.parse.urlencode({"persistentId": doi})
    url = f"{server.rstrip('/')}/api/datasets/:persistentId/versions/:latest/files?{query}"
    with _get(url) as response:
        try:
            doc = json.load(response)
        except json.JSONDecodeError:
            raise InputError(f"{url} did not return JSON; is {server} a Dataverse server?") from None
    if doc.get("status") != "OK" or not isinstance(doc.get("data"), list):
        raise InputError(f"The Dataverse server refused the file list for {doi}: {doc.get('message', doc)}")
    return doc["data"]


def pick_files(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The metadata table and the two image archives, by name; raises if one is absent."""
    wanted: dict[str, dict[str, Any]] = {}
    for entry in files:
        data_file = entry.get("dataFile", {})
        label = entry.get("label") or data_file.get("filename", "")
        stem = Path(label).stem
        if stem in (METADATA_STEM, *IMAGE_ARCHIVES):
            wanted[stem] = data_file
    missing = [s for s in (METADATA_STEM, *IMAGE_ARCHIVES) if s not in wanted]
    if missing:
        raise InputError(f"The dataset's file list has no {', '.join(missing)}.")
    return wanted


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 (Dataverse publishes MD5s; this checks integrity, not security)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_md5(data_file: dict[str, Any]) -> str | None:
    checksum = data_file.get("checksum") or {}
    if str(checksum.get("type", "")).upper() == "MD5":
        return checksum.get("value")
    return data_file.get("md5")


def download_file(server: str, data_file: dict[str, Any], dest: Path) -> Path:
    """Fetch one file by id (the original format for ingested tables) and verify its MD5."""
    expected = _expected_md5(data_file)
    if dest.is_file() and expected and _md5(dest) == expected:
        log.info("%s is already complete", dest.name)
        return dest
    url = f"{server.rstrip('/')}/api/access/datafile/{int(data_file['id'])}"
    if data_file.get("originalFileFormat"):
        url += "?format=original"
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _get(url) as response, part.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, leave=False) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
    # Ingested tables are checksummed as uploaded, which is the original we asked for.
    if expected and _md5(part) != expected:
        part.unlink()
        raise InputError(f"{dest.name} arrived corrupted (MD5 mismatch); run the command again.")
    part.replace(dest)
    return dest


def extract_images(archive: Path, folder: Path) -> int:
    """Unpack the image files of a zip flat into `folder`; returns how many.

    Only file names are used (never the archive's paths), so a hostile archive cannot write
    outside `folder`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = Path(member.filename).name
                if member.is_dir() or not name.lower().endswith(IMAGE_SUFFIXES) or name.startswith("."):
                    continue
                with zf.open(member) as src, (folder / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                count += 1
    except zipfile.BadZipFile:
        raise InputError(f"{archive.name} is not a valid zip archive.") from None
    return count


def download_ham10000(dest: Path | str, server: str = DATAVERSE, doi: str = HAM10000_DOI,
                      keep_archives: bool = False) -> Path:
    """Download and unpack HAM10000 into `dest`; returns `dest` (ready for `load_ham10000`)."""
    dest = Path(dest)
    wanted = pick_files(list_files(server, doi))
    download_file(server, wanted[METADATA_STEM], dest / f"{METADATA_STEM}.csv")
    for stem in IMAGE_ARCHIVES:
        marker = dest / stem / ".complete"  # holds the archive's MD5 once unpacked
        expected = _expected_md5(wanted[stem]) or ""
        if marker.is_file() and marker.read_text().strip() == expected and expected:
            log.info("%s is already unpacked", stem)
            continue
        archive = download_file(server, wanted[stem], dest / f"{stem}.zip")
        count = extract_images(archive, dest / stem)
        marker.write_text(expected)
        log.info("Unpacked %d images into %s", count, dest / stem)
        if not keep_archives:
            archive.unlink()
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dest", type=Path, required=True, help="folder to create (e.g. ~/data/ham10000)")
    p.add_argument("--server", default=DATAVERSE, help="Dataverse server")
    p.add_argument("--doi", default=HAM10000_DOI)
    p.add_argument("--keep-archives", action="store_true", help="keep the zip files after unpacking")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        folder = download_ham10000(args.dest, args.server, args.doi, args.keep_archives)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    log.info("HAM10000 is in %s (CC BY-NC 4.0). Point DERMO_DATA_DIR at its parent folder.", folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
