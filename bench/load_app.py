"""Many clinicians at once: the real server under N concurrent browser sessions.

    python bench/load_app.py --sessions 1 4 8 [--analyses 6] [--memory-analyses 200] [--model-slots 1]

Starts `streamlit run app.py` on a free local port (a throwaway audit log; DERMO_MODEL_SLOTS set
for each value of --model-slots, one server each) and opens one headless Chromium per session
(tests/live_app.py: the same driver as the browser tests). An analysis is what a clinician does:
remove the previous image, enter the next patient's age, sex and site (from the HAM10000 CSV),
upload a real HAM10000 image (a different one every time), wait until the estimate, the
probability chart and the three Grad-CAM panels are shown, and switch the heatmap method once
(waiting for the new heatmap). For each session count, all sessions start together and each runs
--analyses analyses. Then --memory-analyses more are spread over the most sessions, with the
server's memory (resident set of its process tree) before and after.

The server log is searched for uploads that ui.upload_race rescued (Streamlit alone would have
lost them: the uploader's URL answer dropped by a starting script run), and their count printed.

Every shown suggested class and malignant and melanoma risk is compared with a serial Predictor
run on the same image and metadata, to the displayed precision: a difference is cross-talk (and
an error). The time to result runs from the upload to the moment the page shows it all; the
throughput is analyses per second of wall time, the browsers sharing the machine with the server;
the CPU time the server and the browsers each used per analysis shows how the cores were shared.

Targets on 2 cores (the chosen bound, the first --model-slots value): at the most sessions no
errors and no cross-talk, and at least 80% of the one-session throughput; memory growth under
200 MB over 200 analyses.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.model.concurrency import SLOTS_ENV, available_cores, threads_per_call  # noqa: E402
from core.inference import Predictor  # noqa: E402
from ui.upload_race import KEPT_MESSAGE  # noqa: E402
from tests.live_app import (  # noqa: E402
    Analysis,
    DiagnosePage,
    Lesion,
    Readout,
    browser_missing,
    chromium,
    expected_readout,
    ham_lesions,
    live_app,
    run_sessions,
)

THROUGHPUT_TARGET = 0.80
MEMORY_TARGET_MB = 200.0
MEMORY_TARGET_ANALYSES = 200


TICKS = os.sysconf("SC_CLK_TCK")


def _descendants(pids: list[int]) -> list[int]:
    """`pids` and every process below them (Linux /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        children[ppid].append(int(stat.parent.name))
    found, todo = [], list(pids)
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children[current])
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MB."""
    total_kb = 0
    for current in _descendants([pid]):
        try:
            lines = Path(f"/proc/{current}/status").read_text().splitlines()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return total_kb / 1024


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system, with that of reaped children) of `pids` and all their descendants."""
    ticks = 0
    for current in _descendants(pids):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / TICKS


@dataclass
class Phase:
    """One run of `sessions` concurrent sessions on one server."""

    slots: int
    sessions: int
    analyses: list[Analysis]
    wall: float
    rss_mb: float
    server_cpu: float = float("nan")  # CPU seconds of the server's process tree during the phase
    browser_cpu: float = float("nan")  # the same for the browsers (chromedriver and Chromium)

    @property
    def errors(self) -> list[str]:
        return [a.error for a in self.analyses if a.error]

    @property
    def mismatches(self) -> int:
        return sum(a.mismatch for a in self.analyses)

    @property
    def throughput(self) -> float:
        return len(self.analyses) / self.wall

    def seconds(self, attribute: str) -> list[float]:
        return [getattr(a, attribute) for a in self.analyses if not a.error]


def report(analysis: Analysis) -> None:
    """Print a failed analysis as it happens (the table counts it at the end)."""
    if analysis.error:
        print(f"    session {analysis.session}: {analysis.error}", flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def expectations(predictor: Predictor, count: int) -> tuple[list[Lesion], dict[Path, Readout]]:
    """`count` distinct lesions whose estimate the page shows, with their serial predictions."""
    candidates = ham_lesions(config.DEFAULT_DATA_DIR / "ham10000", min(2 * count, count + 500),
                             predictor.encoder.accepted_sites)
    lesions, expected = [], {}
    for lesion in candidates:
        readout = expected_readout(predictor, lesion)
        if readout is not None:
            lesions.append(lesion)
            expected[lesion.image] = readout
        if len(lesions) == count:
            return lesions, expected
    raise SystemExit(f"only {len(lesions)} of {count} usable images")


def deal(lesions: list[Lesion], sessions: int, per_session: int) -> list[list[Lesion]]:
    """The next sessions x per_session lesions (removed from `lesions`), one list per session."""
    taken = [lesions.pop(0) for _ in range(sessions * per_session)]
    return [taken[i::sessions] for i in range(sessions)]


def serve(slots: int, args: argparse.Namespace, lesions: list[Lesion], expected: dict[Path, Readout],
          memory: bool) -> tuple[list[Phase], tuple[float, float, int, Phase | None]]:
    """One server with `slots` model slots: a warm-up analysis, then each session count, then
    (if `memory`) the memory run. Returns the phases and (RSS before, after, analyses, phase)."""
    most = max(args.sessions)
    with tempfile.TemporaryDirectory(prefix="load_app_") as tmp:
        env = {"DERMO_MODEL_DIR": str(args.bundle), "DERMO_AUDIT_DB": str(Path(tmp) / "audit.sqlite3"),
               SLOTS_ENV: str(slots)}
        with live_app(env, Path(tmp) / "streamlit.log", args.port) as app:
            drivers = []
            try:
                for _ in range(most):
                    drivers.append(chromium())
                pages = [DiagnosePage(driver, app.url) for driver in drivers]
                for page in pages:
                    page.open()
                warm, _ = run_sessions(pages[:1], deal(lesions, 1, 1), expected)  # model, CAM and caches warm
                print(f"slots {slots}: server up, {most} browsers open, warm-up {'ok' if not warm[0].error else warm[0].error}"
                      f"; server RSS {tree_rss_mb(app.pid):.0f} MB", flush=True)
                phases = []
                browsers = [driver.service.process.pid for driver in drivers]
                for n in args.sessions:
                    server_cpu, browser_cpu = tree_cpu_seconds([app.pid]), tree_cpu_seconds(browsers)
                    analyses, wall = run_sessions(pages[:n], deal(lesions, n, args.analyses), expected, report)
                    phases.append(Phase(slots, n, analyses, wall, tree_rss_mb(app.pid),
                                        tree_cpu_seconds([app.pid]) - server_cpu, tree_cpu_seconds(browsers) - browser_cpu))
                    print(f"  {n} session(s): {len(analyses)} analyses in {wall:.1f} s", flush=True)
                run = (float("nan"), float("nan"), 0, None)
                if memory and args.memory_analyses:
                    per_session = -(-args.memory_analyses // most)
                    before = tree_rss_mb(app.pid)
                    analyses, wall = run_sessions(pages, deal(lesions, most, per_session), expected, report)
                    run = (before, tree_rss_mb(app.pid), len(analyses), Phase(slots, most, analyses, wall, 0.0))
                    print(f"  memory run: {len(analyses)} analyses in {wall:.1f} s", flush=True)
                return phases, run
            finally:
                for driver in drivers:
                    driver.quit()
                kept = (Path(tmp) / "streamlit.log").read_text(errors="replace").count(KEPT_MESSAGE)
                print(f"slots {slots}: uploads whose URLs ui.upload_race kept from a starting run's queue clear "
                      f"(each one an upload Streamlit alone would have lost): {kept}", flush=True)


def table(phases: list[Phase]) -> str:
    single = {p.slots: p.throughput for p in phases if p.sessions == 1}
    cores = available_cores()
    lines = ["| model slots (torch threads each) | sessions | analyses | errors | cross-talk | time to result p50 / p95 (s) "
             "| new heatmap p50 (s) | analyses/s | vs 1 session | CPU s per analysis: server / browsers "
             "| server RSS after (MB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in phases:
        results = p.seconds("to_result")
        ratio = f"{p.throughput / single[p.slots]:.0%}" if p.slots in single else "n/a"
        slots = f"{p.slots} ({threads_per_call(p.slots, cores)})" if p.slots else f"no bound ({cores})"
        lines.append(f"| {slots} | {p.sessions} | {len(p.analyses)} | {len(p.errors)} | {p.mismatches} "
                     f"| {percentile(results, 50):.2f} / {percentile(results, 95):.2f} "
                     f"| {percentile(p.seconds('to_new_heatmap'), 50):.2f} | {p.throughput:.2f} | {ratio} "
                     f"| {p.server_cpu / len(p.analyses):.2f} / {p.browser_cpu / len(p.analyses):.2f} "
                     f"| {p.rss_mb:.0f} |")
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--analyses", type=int, default=6, help="analyses per session at each session count")
    parser.add_argument("--memory-analyses", type=int, default=MEMORY_TARGET_ANALYSES,
                        help="analyses of the memory run, spread over the most sessions (0: no memory run)")
    parser.add_argument("--model-slots", type=int, nargs="+", default=[1],
                        help=f"{SLOTS_ENV} for each server, the chosen bound first (0: no bound, for comparison)")
    parser.add_argument("--bundle", type=Path, default=config.WEIGHTS_DIR / config.DEFAULT_MODEL)
    parser.add_argument("--port", type=int, default=0, help="the server's port (default: a free one)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of this script's serial predictions")
    args = parser.parse_args(argv)
    if reason := browser_missing():
        raise SystemExit(reason)
    args.sessions = sorted(set(args.sessions))
    torch.set_num_threads(args.threads)

    most = max(args.sessions)
    need = len(args.model_slots) * (1 + args.analyses * sum(args.sessions)) + most * -(-args.memory_analyses // most)
    t0 = time.perf_counter()
    lesions, expected = expectations(Predictor.load(args.bundle), need)
    print(f"{need} images, serial predictions in {time.perf_counter() - t0:.0f} s; {available_cores()} cores", flush=True)

    phases: list[Phase] = []
    memory = (float("nan"), float("nan"), 0, None)
    for i, slots in enumerate(args.model_slots):
        found, run = serve(slots, args, lesions, expected, memory=i == 0)
        phases += found
        memory = run if i == 0 else memory

    print()
    print(table(phases))
    chosen = [p for p in phases if p.slots == args.model_slots[0]]
    top, single = chosen[-1], next((p for p in chosen if p.sessions == 1), None)
    before, after, count, run = memory
    if run is not None:
        print(f"\nMemory run ({count} analyses over {run.sessions} sessions, {run.throughput:.2f}/s, "
              f"{len(run.errors)} errors, {run.mismatches} cross-talk): server RSS {before:.0f} MB before, "
              f"{after:.0f} MB after, growth {after - before:+.0f} MB")
    errors = [e for p in phases for e in p.errors] + (run.errors if run else [])
    for error in errors[:10]:
        print(f"  error: {error}")

    print(f"\nTargets ({SLOTS_ENV}={args.model_slots[0]}):")
    print(f"  {top.sessions} sessions without errors or cross-talk: {verdict(not top.errors)} "
          f"({len(top.errors)} errors, {top.mismatches} cross-talk)")
    if single is not None and top is not single:
        ratio = top.throughput / single.throughput
        print(f"  throughput at {top.sessions} sessions >= {THROUGHPUT_TARGET:.0%} of one session's: "
              f"{verdict(ratio >= THROUGHPUT_TARGET)} ({ratio:.0%})")
    if run is not None:
        growth = after - before
        note = "" if count >= MEMORY_TARGET_ANALYSES else f"; the target is for {MEMORY_TARGET_ANALYSES} analyses"
        print(f"  memory growth < {MEMORY_TARGET_MB:.0f} MB over {count} analyses: "
              f"{verdict(growth < MEMORY_TARGET_MB)} ({growth:+.0f} MB{note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
