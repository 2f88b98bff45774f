"""The process-wide bound on concurrent model work: forward passes, CAMs, SHAP steps.

Streamlit runs every browser session's script in its own thread of one process, and every
thread that calls torch starts its own OpenMP thread team. On a 2-core machine a few model
calls at once then run tens of times slower than one (measured: three processes at 2 threads
each took 2.9 s per prediction instead of 56 ms). So every model call goes through
`model_slot()`: at most `DERMO_MODEL_SLOTS` calls (default 1) run at once, the others wait
their turn, and the app gives torch `cores // slots` threads (`configure_torch_threads`) so the
calls in flight together use each core once. One call takes 56 ms (a prediction) to about
0.3 s (a Grad-CAM), so the wait it adds is short beside a page rerun.

The slot is re-entrant within a thread (a CAM that runs a forward inside it takes one slot),
so nesting cannot deadlock. `DERMO_MODEL_SLOTS=0` removes the bound (torch's own thread count,
any number of calls at once): only for measuring what the bound buys (`bench/load_app.py`).
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

from core.errors import InputError

log = logging.getLogger(__name__)

SLOTS_ENV = "DERMO_MODEL_SLOTS"
DEFAULT_SLOTS = 1


class ModelSlots:
    """At most `size` holders at once across threads (0: no bound); re-entrant per thread."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise InputError(f"The number of model slots must be 0 (no bound) or more, got {size}.")
        self.size = size
        self._semaphore = threading.BoundedSemaphore(size) if size else None
        self._local = threading.local()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for a slot (unless this thread holds one already) and keep it for the block."""
        depth = getattr(self._local, "depth", 0)
        take = depth == 0 and self._semaphore is not None
        if take:
            self._semaphore.acquire()
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if take:
                self._semaphore.release()


def configured_slots() -> int:
    """DERMO_MODEL_SLOTS as an integer (default 1); a readable error for anything else."""
    raw = os.environ.get(SLOTS_ENV, "").strip()
    if not raw:
        return DEFAULT_SLOTS
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"{SLOTS_ENV} must be a whole number (0 = no bound), got {raw!r}.") from None


_SLOTS: ModelSlots | None = None
_SLOTS_INIT = threading.Lock()


def slots() -> ModelSlots:
    """This process's bound, made on first use from the environment."""
    global _SLOTS
    with _SLOTS_INIT:
        if _SLOTS is None:
            _SLOTS = ModelSlots(configured_slots())
        return _SLOTS


def model_slot() -> AbstractContextManager[None]:
    """`with model_slot():` around any torch work on a shared model."""
    return slots().hold()


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_call(size: int, cores: int) -> int:
    """Torch threads for each model call so that `size` calls at once use each core once;
    with no bound (0), one per core for every call, as torch's default gives."""
    return max(1, cores // size) if size else cores


def configure_torch_threads() -> int:
    """Set torch's thread count for the server from the bound and the cores (done once by the
    app's model loader; command-line scripts set their own --threads). Returns the count."""
    bound = slots()
    threads = threads_per_call(bound.size, available_cores())
    torch.set_num_threads(threads)
    log.info("model work: %s slot(s), %d torch thread(s) each", bound.size or "unbounded", threads)
    return threads
