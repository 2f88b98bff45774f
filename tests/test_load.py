"""Several clinicians at once on the real server: the small version of `bench/load_app.py`.

Three headless Chromium sessions, at the same time, each enter a different patient's metadata,
upload a different real HAM10000 image, wait for the estimate and the heatmap, and switch the
heatmap method; twice each. Every shown suggested class and risk must equal a serial Predictor
run on the same image and metadata (no cross-talk between sessions), and no session may see an
error. No timing is asserted: the speed figures are the benchmark's.
"""
from __future__ import annotations

import pytest

from core.inference import Predictor
from tests.live_app import DiagnosePage, chromium, expected_readout, ham_lesions, run_sessions

pytestmark = pytest.mark.browser

SESSIONS = 3
ANALYSES = 2


def test_concurrent_sessions_see_their_own_results(live_url, default_bundle, ham_dir):
    predictor = Predictor.load(default_bundle)
    lesions = [lesion for lesion in ham_lesions(ham_dir, 2 * SESSIONS * ANALYSES, predictor.encoder.accepted_sites)
               if expected_readout(predictor, lesion) is not None][:SESSIONS * ANALYSES]
    expected = {lesion.image: expected_readout(predictor, lesion) for lesion in lesions}
    drivers = []
    try:
        for _ in range(SESSIONS):
            drivers.append(chromium())
        pages = [DiagnosePage(driver, live_url) for driver in drivers]
        for page in pages:
            page.open()
        work = [lesions[i::SESSIONS] for i in range(SESSIONS)]
        analyses, _ = run_sessions(pages, work, expected)
    finally:
        for driver in drivers:
            driver.quit()
    assert len(analyses) == SESSIONS * ANALYSES
    assert [a.error for a in analyses if a.error] == []
    assert {a.lesion.filename for a in analyses} == {lesion.filename for lesion in lesions}
