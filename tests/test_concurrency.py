"""The bound on concurrent model work (core.model.concurrency): it serialises, it nests, and the
prediction and the CAM really go through it."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.errors import InputError
from core.explain import heatmap
from core.inference import Predictor
from core.model import concurrency
from core.model.concurrency import ModelSlots, configured_slots, threads_per_call

THREADS = 6


def _intervals(slots: ModelSlots) -> list[tuple[float, float]]:
    """Start THREADS threads together; each records when it held a slot."""
    start, intervals, lock = threading.Barrier(THREADS), [], threading.Lock()

    def work() -> None:
        start.wait()
        with slots.hold():
            t0 = time.perf_counter()
            time.sleep(0.02)
            t1 = time.perf_counter()
        with lock:
            intervals.append((t0, t1))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(intervals)


def test_one_slot_never_overlaps():
    intervals = _intervals(ModelSlots(1))
    assert len(intervals) == THREADS
    assert all(prev_end <= next_start for (_, prev_end), (next_start, _) in zip(intervals, intervals[1:]))


def test_two_slots_let_two_in_at_once_and_no_more():
    slots, inside, most, lock = ModelSlots(2), 0, 0, threading.Lock()
    both_in = threading.Barrier(2, timeout=10)  # breaks (an error) unless two holders meet inside

    def work(meet: bool) -> None:
        nonlocal inside, most
        with slots.hold():
            with lock:
                inside += 1
                most = max(most, inside)
            if meet:
                both_in.wait()
            time.sleep(0.01)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work, args=(i < 2,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 2 and not both_in.broken


def test_a_thread_holding_a_slot_may_nest_without_deadlock():
    slots = ModelSlots(1)
    with slots.hold():
        with slots.hold():  # a CAM's forward inside the CAM's own slot
            pass
    assert slots._semaphore.acquire(blocking=False)  # everything was released
    slots._semaphore.release()


def test_zero_slots_is_no_bound():
    slots, all_in = ModelSlots(0), threading.Barrier(THREADS, timeout=10)

    def work() -> None:
        with slots.hold():
            all_in.wait()  # breaks (an error) unless every thread is inside at once

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not all_in.broken


def test_settings(monkeypatch):
    monkeypatch.delenv(concurrency.SLOTS_ENV, raising=False)
    assert configured_slots() == 1
    monkeypatch.setenv(concurrency.SLOTS_ENV, "3")
    assert configured_slots() == 3
    monkeypatch.setenv(concurrency.SLOTS_ENV, "two")
    with pytest.raises(InputError, match="whole number"):
        configured_slots()
    with pytest.raises(InputError):
        ModelSlots(-1)
    assert threads_per_call(1, 2) == 2 and threads_per_call(2, 2) == 1 and threads_per_call(4, 2) == 1
    assert threads_per_call(0, 2) == 2


def _blocked_while_held(monkeypatch, call) -> None:
    """`call` must wait while another thread holds the only slot, and finish once it is freed."""
    slots = ModelSlots(1)
    monkeypatch.setattr(concurrency, "_SLOTS", slots)
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # reported in the test thread
            errors.append(exc)
        done.set()

    worker = threading.Thread(target=run)
    with slots.hold():
        worker.start()
        assert not done.wait(0.5), "the model call ran while the only slot was taken"
    worker.join(60)
    assert done.is_set() and not errors, errors


def test_prediction_waits_for_the_slot(monkeypatch, tiny_bundle, rng):
    predictor = Predictor.load(tiny_bundle)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    _blocked_while_held(monkeypatch, lambda: predictor.predict(image, age=40))


def test_cam_waits_for_the_slot(monkeypatch, tiny_bundle, rng):
    predictor = Predictor.load(tiny_bundle)
    tensor = predictor.tensor_from_rgb(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    meta = predictor.meta_tensor(age=40)
    _blocked_while_held(monkeypatch, lambda: heatmap.compute_cam(predictor.model, tensor, meta, 0))
