"""The real app, live: `streamlit run app.py` on a free port, headless Chromium, and the Diagnose
page driven as a clinician drives it (metadata, upload, read the result, switch the heatmap method).

Used by the browser tests (tests/test_browser.py, tests/test_load.py) and the load benchmark
(bench/load_app.py), so what the benchmark measures is what the tests check. What the page shows
is read back through the clinician's own text: the case heading names the file, the "Suggested
class" metric, the referral boxes' "<risk>: 7.6%" lines and the heatmap caption "<method> heatmap:
<class>"; a result counts as shown only once the script has stopped running, nothing on the page
is stale and every image has loaded.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.clinic.report import RISK_LABELS, class_label, risk_statements
from core.config import REPO_ROOT
from core.explain.heatmap import DEFAULT_METHOD
from core.inference import Predictor

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
START_TIMEOUT = 180
STEP_TIMEOUT = int(os.environ.get("LIVE_STEP_TIMEOUT", 240))
SUGGESTED = "Suggested class"
QUIET = 1.0
#: Seconds a page may stay disconnected from the server (Streamlit reconnects by itself) before a
#: wait ends with an error instead of running to STEP_TIMEOUT.
LOST = 10.0
#: The heatmap method each analysis switches to from the default (and back, on the next analysis).
OTHER_METHOD = "Grad-CAM++"

#: A readout: what the page shows for one case, as text ({"Suggested class": ..., "<risk label>": "7.6%"}).
Readout = dict[str, str]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when Chromium and chromedriver are installed."""
    if CHROMIUM and CHROMEDRIVER:
        return None
    return "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"


# -- the server -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout} s")


@dataclass(frozen=True)
class LiveApp:
    url: str
    pid: int


@contextmanager
def live_app(env: dict[str, str], log_path: Path, port: int = 0) -> Iterator[LiveApp]:
    """`streamlit run app.py` on 127.0.0.1 (a free port unless `port`), with `env` added to this
    process's environment (DERMO_AUDIT_DB, say); stopped, with its process group, on exit."""
    port = port or free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc, START_TIMEOUT)
            yield LiveApp(url, proc.pid)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except ProcessLookupError:  # killed already (the fault tests SIGKILL it)
                proc.wait()
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def chromium() -> Any:
    """A headless Chromium driver with a window tall enough to show the whole Diagnose page."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1400,3000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(STEP_TIMEOUT + 30)  # the page's own wait ends first, saying what it sees
    driver.command_executor.client_config.timeout = STEP_TIMEOUT + 60  # that wait is one long request
    return driver


# -- the cases and what a serial Predictor says about them -------------------------------------
@dataclass(frozen=True)
class Lesion:
    """A real HAM10000 image with its patient's metadata from the dataset's CSV."""

    image: Path
    age: int
    sex: str
    site: str

    @property
    def filename(self) -> str:
        return self.image.name

    @property
    def metadata(self) -> dict[str, Any]:
        return {"age": self.age, "sex": self.sex, "site": self.site}


def ham_lesions(ham_dir: Path, count: int, sites: list[str], seed: int = 0) -> list[Lesion]:
    """`count` different images, drawn at random (seeded) from those whose age, sex and site are all known."""
    with open(ham_dir / "HAM10000_metadata.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["age"] not in ("", "nan") and r["sex"] in ("female", "male") and r["localization"] in sites]
    rows.sort(key=lambda r: r["image_id"])
    if count > len(rows):
        raise ValueError(f"asked for {count} images, {len(rows)} have complete metadata")
    chosen = np.random.default_rng(seed).choice(len(rows), size=count, replace=False)
    return [Lesion(ham_dir / "images" / f"{rows[i]['image_id']}.jpg", int(float(rows[i]["age"])), rows[i]["sex"],
                   rows[i]["localization"]) for i in chosen]


def expected_readout(predictor: Predictor, lesion: Lesion) -> Readout | None:
    """What the page must show for `lesion`, from a serial Predictor run formatted as the page
    formats it; None when the image checks withhold the estimate (nothing to compare)."""
    prediction = predictor.predict(lesion.image, **lesion.metadata)
    if prediction.quality is not None and prediction.quality.withheld:
        return None
    readout = {SUGGESTED: class_label(predictor.card, prediction.top)}
    readout.update({s.label: f"{s.value:.1%}" for s in risk_statements(prediction, predictor.card)})
    return readout


# -- the Diagnose page --------------------------------------------------------------------------
#: Resolves, once the page is idle, with {error} or the page's state; or with {timeout: what the page
#: shows} after `wait` seconds. Checked in the page itself (on DOM changes, and every 250 ms), so a wait
#: costs one WebDriver call and its end is timed by the page's own clock.
_SETTLED_JS = """
const [filename, wanted, after, wait, done] = arguments;
const all = (css) => [...document.querySelectorAll(css)];
function state() {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute("data-test-script-state") !== "notRunning") return null;
  if (document.querySelector("[data-stale='true'], [data-testid='stSkeleton']")) return null;
  const errors = all("[data-testid='stException'], [data-testid='stAlertContentError']");
  if (errors.length) return {error: errors.map(e => e.innerText).join(" | ")};
  const cases = all("[data-testid='stHeading']").map(e => e.innerText.trim()).filter(h => h.startsWith("Case "));
  if (filename === null) return cases.length ? null : {ok: true};
  if (!cases.some(h => h.endsWith(": " + filename))) return null;
  const images = all("[data-testid='stImage'] img");
  if (images.length < 5 || images.some(i => !i.complete || i.naturalWidth === 0)) return null;
  const chosen = document.querySelector(".st-key-diagnose_cam_method input");
  const method = wanted || (chosen && chosen.value);
  if (!all("[data-testid='stImageCaption']").some(e => e.innerText.startsWith(method + " heatmap:"))) return null;
  if (!document.querySelector("[data-testid='stPlotlyChart'] .main-svg")) return null;
  const metric = all("[data-testid='stMetric']")
    .find(m => m.querySelector("[data-testid='stMetricLabel']").innerText.trim() === "%s");
  if (!metric) return null;
  return {ok: true, method: method, suggested: metric.querySelector("[data-testid='stMetricValue']").innerText.trim(),
          text: document.querySelector("[data-testid='stMain']").innerText};
}
function seen() {
  const app = document.querySelector("[data-testid='stApp']");
  return {script: app && app.getAttribute("data-test-script-state"), stale: all("[data-stale='true']").length,
          skeletons: all("[data-testid='stSkeleton']").length,
          headings: all("[data-testid='stHeading']").map(e => e.innerText.trim()),
          captions: all("[data-testid='stImageCaption']").map(e => e.innerText.trim()),
          images_loaded: all("[data-testid='stImage'] img").map(i => i.complete && i.naturalWidth > 0),
          uploader_files: all("[data-testid='stFileUploaderFileName']").map(e => e.innerText.trim()),
          input_files: all(".st-key-diagnose_upload input[type='file']").map(i => i.files.length),
          alerts: all("[data-testid='stAlert']").map(e => e.innerText.trim().slice(0, 200)),
          states: window.liveStates, marks: window.liveMarks};
}
function connection() {
  const app = document.querySelector("[data-testid='stApp']");
  return app && app.getAttribute("data-test-connection-state");
}
const deadline = Date.now() + 1000 * wait;
let idleSince = null, lostSince = null, queued = false, finished = false;
function finish(result) {
  finished = true; clearInterval(timer); observer.disconnect(); done(result);
}
function check() {
  queued = false;
  if (finished) return;
  const link = connection();
  lostSince = !link || link === "CONNECTED" ? null : (lostSince || Date.now());
  if (lostSince !== null && Date.now() - lostSince >= %d) {
    finish({error: "the page lost the server (connection state " + link + ")"});
    return;
  }
  const s = state();
  idleSince = s === null ? null : (idleSince || Date.now());
  const ran = after === null || (window.liveRunsEnded || 0) > after || Date.now() - idleSince >= %d;
  if (s !== null && ran) { s.at = Date.now() / 1000; finish(s); }
  else if (Date.now() > deadline) finish({timeout: JSON.stringify(seen())});
}
// Checked 30 ms after the DOM changes (one check per burst of changes), and every 250 ms for the rules
// that need time to pass: an idle page costs the browser next to nothing (eight of them share the
// server's cores in the load benchmark).
const observer = new MutationObserver(() => { if (!queued) { queued = true; setTimeout(check, 30); } });
observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
const timer = setInterval(check, 250);
check();
""" % (SUGGESTED, 1000 * LOST, 1000 * QUIET)


#: Counts the script runs that end (the page may still read "notRunning" just after a click, before
#: the run it asked for has started), so a wait can require a run that ended after the action; when
#: React merges a short run's "running" into one update the DOM never shows it, so QUIET seconds of
#: an idle page count as that run.
_COUNT_RUNS_JS = """
const app = document.querySelector("[data-testid='stApp']");
window.liveRunsEnded = 0;
window.liveStates = [];
new MutationObserver(records => {
  window.liveRunsEnded += records.filter(r => r.oldValue === "running").length;
  for (const r of records) window.liveStates.push([Date.now() / 1000, r.oldValue, app.getAttribute("data-test-script-state")]);
  window.liveStates = window.liveStates.slice(-12);
}).observe(app, {attributes: true, attributeOldValue: true, attributeFilter: ["data-test-script-state"]});
"""


class PageError(RuntimeError):
    """The page showed an error, or did not reach the expected state in time."""


class DiagnosePage:
    """One browser session on the Diagnose page."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url
        self.method = ""  # the heatmap method shown
        self.shown: Lesion | None = None

    def open(self) -> None:
        self.driver.get(f"{self.url}/Diagnose")
        self._element(".st-key-diagnose_site input")
        self.driver.execute_script(_COUNT_RUNS_JS)
        self._settled(None)

    def _runs(self) -> int:
        return int(self.driver.execute_script("return window.liveRunsEnded;"))

    def _element(self, css: str) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, STEP_TIMEOUT).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def _settled(self, lesion: Lesion | None, method: str | None = None, after: int | None = None) -> dict[str, Any]:
        """Wait until the page is idle, a script run has ended since the count `after` (if given),
        and it shows `lesion` with `method`'s heatmap (the method chosen on the page if None);
        with no lesion, until it shows no case at all."""
        state = self.driver.execute_async_script(_SETTLED_JS, lesion.filename if lesion else None, method, after,
                                                 STEP_TIMEOUT)
        if "error" in state:
            raise PageError(f"the page shows an error: {state['error']}")
        if "timeout" in state:
            wanted = f"{lesion.filename} with its {method or 'chosen'} heatmap" if lesion else "no case"
            raise PageError(f"after {STEP_TIMEOUT} s the page did not show {wanted}; it shows {state['timeout']}")
        return state

    def _choose(self, key: str, option: str) -> bool:
        """Pick `option` in the selectbox with widget key `key` (type to filter, click the exact option);
        False if it was chosen already."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait

        field_ = self._element(f".st-key-{key} input")
        if field_.get_attribute("value") == option:
            return False
        field_.click()
        field_.send_keys(Keys.CONTROL, "a")
        field_.send_keys(option)
        exact = WebDriverWait(self.driver, STEP_TIMEOUT).until(
            lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "[role='listbox'] [role='option']")
                            if o.text.strip() == option), False))
        exact.click()
        WebDriverWait(self.driver, STEP_TIMEOUT).until(
            lambda d: d.find_element(By.CSS_SELECTOR, f".st-key-{key} input").get_attribute("value") == option)
        return True

    def _type_age(self, age: int) -> bool:
        from selenium.webdriver.common.keys import Keys

        field_ = self._element(".st-key-diagnose_age input")
        if field_.get_attribute("value") == str(age):
            return False
        field_.send_keys(Keys.CONTROL, "a")
        field_.send_keys(str(age), Keys.ENTER)
        return True

    def set_metadata(self, lesion: Lesion) -> None:
        for change in (lambda: self._type_age(lesion.age), lambda: self._choose("diagnose_sex", lesion.sex),
                       lambda: self._choose("diagnose_site", lesion.site)):
            before = self._runs()
            if change():
                self._settled(None, after=before)
        age = self._element(".st-key-diagnose_age input").get_attribute("value")
        if age != str(lesion.age):
            raise PageError(f"the age field reads {age!r}, not {lesion.age}")

    def remove_upload(self) -> None:
        if self.shown is None:
            return
        before = self._runs()
        self._element(f"button[aria-label='Remove {self.shown.filename}']").click()
        self.shown = None
        self._settled(None, after=before)

    def upload(self, lesion: Lesion) -> tuple[float, Readout]:
        """Upload `lesion`; returns (seconds until the estimate and heatmap are shown, the readout)."""
        field_ = self._element(".st-key-diagnose_upload input[type='file']")
        self.driver.execute_script("arguments[0].value = '';", field_)  # chromedriver adds to a multiple input's files
        before, started = self._runs(), time.time()
        self.driver.execute_script("window.liveMarks = (window.liveMarks || []).concat([[Date.now() / 1000, 'upload']]).slice(-6);")
        field_.send_keys(str(lesion.image))
        state = self._settled(lesion, after=before)
        self.shown, self.method = lesion, state["method"]
        readout = {SUGGESTED: state["suggested"]}
        for label in RISK_LABELS.values():
            match = re.search(re.escape(label) + r": (\d+(?:\.\d+)?%)", state["text"])
            readout[label] = match.group(1) if match else "not shown"
        return state["at"] - started, readout

    def logged(self) -> int:
        """How many analyses the page says this session has in the audit log (its own-log expander)."""
        from selenium.webdriver.common.by import By

        for summary in self.driver.find_elements(By.CSS_SELECTOR, "[data-testid='stExpander'] summary"):
            match = re.search(r"your analyses in this session \((\d+)\)", summary.text)
            if match:
                return int(match.group(1))
        raise PageError("the page shows no audit log of this session")

    def switch_method(self) -> float:
        """Switch the heatmap method (default <-> OTHER_METHOD); seconds until the new heatmap shows."""
        method = OTHER_METHOD if self.method == DEFAULT_METHOD else DEFAULT_METHOD
        before, started = self._runs(), time.time()
        self._choose("diagnose_cam_method", method)
        state = self._settled(self.shown, method, before)
        self.method = method
        return state["at"] - started


# -- one analysis, and many sessions at once -----------------------------------------------------
@dataclass
class Analysis:
    """One lesion through one session: upload -> estimate and heatmap -> another heatmap method."""

    session: int
    lesion: Lesion
    to_result: float = float("nan")
    to_new_heatmap: float = float("nan")
    shown: Readout = field(default_factory=dict)
    mismatch: bool = False
    error: str = ""


def analyse(page: DiagnosePage, session: int, lesion: Lesion, expected: Readout) -> Analysis:
    """Remove the previous upload, enter the metadata, upload, compare the shown result with the
    serial prediction, switch the heatmap method. A failure is recorded, never raised."""
    record = Analysis(session, lesion)
    try:
        page.remove_upload()
        page.set_metadata(lesion)
        record.to_result, record.shown = page.upload(lesion)
        if record.shown != expected:
            record.mismatch = True
            record.error = f"{lesion.filename}: shown {record.shown}, a serial Predictor gives {expected}"
        record.to_new_heatmap = page.switch_method()
    except Exception as exc:  # a timeout, a page error, a lost browser: all count as errors
        record.error = record.error or f"{lesion.filename}: {type(exc).__name__}: {str(exc).splitlines()[0][:1500]}"
    return record


def run_sessions(pages: list[DiagnosePage], work: list[list[Lesion]], expected: dict[Path, Readout],
                 done: Callable[[Analysis], None] | None = None) -> tuple[list[Analysis], float]:
    """Each page analyses its own list of lesions, all pages at once (one thread each, started
    together). Returns every analysis and the wall time from the start to the last one's end."""
    start = threading.Barrier(len(pages) + 1)
    results: list[Analysis] = []
    lock = threading.Lock()

    def session(index: int) -> None:
        start.wait()
        for lesion in work[index]:
            record = analyse(pages[index], index, lesion, expected[lesion.image])
            with lock:
                results.append(record)
            if done:
                done(record)

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(len(pages))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return results, time.perf_counter() - began
