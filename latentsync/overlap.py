"""Three stages over a stream of windows, in series or overlapped: a producer thread, the caller, a finisher thread.

    produce (thread) ──queue──► work (the caller's thread) ──queue──► finish (thread)

`run_stages(items, work, finish, overlap=True)` gives exactly what `for item in items: finish(work(item))` gives, in
the same order; with `overlap` the producer prepares the next windows and the finisher completes the previous ones
while the caller works on the current one. At most `2 * depth + 1` windows exist at once, from the moment the producer
starts one until the finisher is done with it (with the default depth 1: one being prepared, one at the model, one
being finished, each possibly waiting at a queue instead), and no stage keeps a window it has handed on: memory stays
flat in the video's length.

`work` always runs in the caller's thread (ComfyUI's progress bar, Cancel and model management stay where they were
called). While it waits for another stage, the caller calls `poll()` every `poll_interval` seconds, so a Cancel raised
from a progress callback is seen there too. The first exception of any stage stops the others and reaches the caller
unchanged (same type, same message); on every path both threads are joined before `run_stages` returns or raises.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

T = TypeVar("T")
U = TypeVar("U")

_DONE = object()  # end of the stream


class _Stopped(Exception):
    """A stage was told to stop because another one failed or the caller left."""


class _Shared:
    def __init__(self, poll: Callable[[], None] | None, poll_interval: float):
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.poll, self.poll_interval = poll, poll_interval

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.error is None:
                self.error = exc
        self.stop.set()

    def check(self) -> None:
        """In the caller's thread: raise the stage's error if one failed."""
        if self.error is not None:
            raise self.error

    def put(self, q: queue.Queue, item, caller: bool = False) -> None:
        while True:
            if caller:
                self.check()
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=self.poll_interval)
                return
            except queue.Full:
                if caller and self.poll is not None:
                    self.poll()

    def acquire(self, slots: threading.Semaphore) -> None:
        while not slots.acquire(timeout=self.poll_interval):
            if self.stop.is_set():
                raise _Stopped

    def get(self, q: queue.Queue, caller: bool = False):
        while True:
            try:
                return q.get(timeout=self.poll_interval)
            except queue.Empty:
                if caller:
                    self.check()
                    if self.poll is not None:
                        self.poll()
                if self.stop.is_set():
                    raise _Stopped from None


class _Timed:
    """Busy seconds of each stage (time spent inside it, waits excluded)."""

    def __init__(self, items: Iterable, work: Callable, finish: Callable):
        self.seconds = {"produce": 0.0, "work": 0.0, "finish": 0.0}
        self._items, self._work, self._finish = iter(items), work, finish

    def _timed(self, key: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[key] += time.perf_counter() - t0

    def __iter__(self):
        return self

    def __next__(self):
        return self._timed("produce", next, self._items)

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def work(self, item):
        return self._timed("work", self._work, item)

    def finish(self, result) -> None:
        self._timed("finish", self._finish, result)


def run_stages(items: Iterable[T], work: Callable[[T], U], finish: Callable[[U], None], overlap: bool = True,
               depth: int = 1, poll: Callable[[], None] | None = None, poll_interval: float = 0.05) -> dict:
    """`for item in items: finish(work(item))`, overlapped in three threads when `overlap` (see the module doc).
    Returns the busy seconds of each stage: {"produce", "work", "finish"}."""
    timed = _Timed(items, work, finish)
    try:
        _run(timed, timed.work, timed.finish, overlap, depth, poll, poll_interval)
    finally:
        if not overlap:
            timed.close()
    return dict(timed.seconds)


def _in_callers_autograd_mode(fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` to run in another thread under the caller's grad and inference modes, which are per thread: tensors made
    by the caller under `torch.inference_mode()` (as ComfyUI runs every node) may only be updated in place there."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run() -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fn()

    return run


def _run(items, work, finish, overlap, depth, poll, poll_interval) -> None:
    if not overlap:
        for item in items:
            finish(work(item))
            del item  # not held while the next one is made
        return
    shared = _Shared(poll, poll_interval)
    depth = max(1, int(depth))
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    behind: queue.Queue = queue.Queue(maxsize=depth)
    # A window holds a slot from before the producer starts it until the finisher is done with it: without this the
    # producer would build one more while its last one waits at a full queue, and a long video hold more windows
    # than a short one (measured at 960x540: most of the overlapped run's growth from 24 s to 60 s).
    slots = threading.Semaphore(2 * depth + 1)
    iterator = iter(items)

    def produce() -> None:
        try:
            while True:
                shared.acquire(slots)
                item = next(iterator, _DONE)
                if item is _DONE:
                    break
                shared.put(ahead, item)
                del item  # not held while the next one is made (it may be finished by then)
            shared.put(ahead, _DONE)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            shared.fail(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:  # a generator's own `finally` blocks run in the thread that iterated it
                close()

    def complete() -> None:
        try:
            while True:
                result = shared.get(behind)
                if result is _DONE:
                    return
                finish(result)
                del result  # before the slot is given back
                slots.release()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
            shared.fail(exc)

    threads = [threading.Thread(target=_in_callers_autograd_mode(produce), name="latentsync-produce", daemon=True),
               threading.Thread(target=_in_callers_autograd_mode(complete), name="latentsync-finish", daemon=True)]
    for t in threads:
        t.start()
    try:
        try:
            while True:
                item = shared.get(ahead, caller=True)
                if item is _DONE:
                    break
                shared.put(behind, work(item), caller=True)
                del item  # not held while waiting for the next one
            shared.put(behind, _DONE, caller=True)
            while threads[1].is_alive():
                threads[1].join(poll_interval)
                shared.check()
                if threads[1].is_alive() and poll is not None:
                    poll()
            shared.check()
        except _Stopped:
            shared.check()  # the stage that stopped everything failed: raise its error
            raise
    finally:
        shared.stop.set()
        for t in threads:
            t.join()
