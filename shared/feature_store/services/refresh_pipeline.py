"""The moving parts of a bulk refresh run: chunks computed ahead on worker threads, progress with rate and ETA.

Source statements run on ``workers`` threads (each on its own PostgreSQL connection, so the
database computes them in parallel) while the calling thread writes finished chunks to Redis in
the order they were submitted. At most ``workers + 1`` chunks exist at once: memory is bounded by
the chunk size, never by the number of users.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from feature_store.logs import get_logger

log = get_logger("feature_store.refresh")

K = TypeVar("K")
R = TypeVar("R")


def pipelined(jobs: Iterable[tuple[K, Callable[[], R]]], workers: int) -> Iterator[tuple[K, R]]:
    """Results of ``jobs`` in submission order, computed up to ``workers + 1`` ahead.

    ``jobs`` decides when to stop (a Budget); the jobs already started are finished and handed
    back, so a caller that checkpoints each result loses no work. Closing the iterator early
    cancels the jobs not yet started and waits for the running ones.
    """
    source = iter(jobs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
        pending: deque[tuple[K, Future[R]]] = deque()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) <= workers:
                    job = next(source, None)
                    if job is None:
                        exhausted = True
                    else:
                        pending.append((job[0], pool.submit(job[1])))
                if not pending:
                    return
                key, future = pending.popleft()
                yield key, future.result()
        finally:
            for _, future in pending:
                future.cancel()


class ProgressSink(Protocol):
    """Where a command line draws its progress bar."""

    def start(self, total: int, done: int) -> None: ...

    def advance(self, n: int) -> None: ...


class Tracker:
    """Counts a run's users, logs done / rate / ETA every ``every_s`` seconds and feeds an optional sink."""

    def __init__(self, fields: dict[str, Any], total: int, done: int, every_s: float,
                 sink: ProgressSink | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.fields = fields
        self.total = total
        self.done_before = done
        self.done_now = 0
        self.every_s = every_s
        self.sink = sink
        self._clock = clock
        self.started = clock()
        self._last_log = self.started
        if sink is not None:
            sink.start(total, done)

    def advance(self, n: int) -> None:
        self.done_now += n
        if self.sink is not None:
            self.sink.advance(n)
        now = self._clock()
        if now - self._last_log >= self.every_s:
            self._last_log = now
            log.info("refresh progress", extra={"fields": {"event": "refresh_progress", **self.fields,
                                                           **self.snapshot()}})

    def snapshot(self) -> dict[str, Any]:
        """``done`` (whole run), ``total``, this invocation's ``rate_per_s``, ``eta_s`` and ``elapsed_s``."""
        elapsed = self._clock() - self.started
        rate = self.done_now / elapsed if elapsed > 0 else 0.0
        done = self.done_before + self.done_now
        remaining = max(0, self.total - done)
        eta = None if rate <= 0 else round(remaining / rate, 1)
        return {"done": done, "total": self.total, "rate_per_s": round(rate, 1), "eta_s": eta,
                "elapsed_s": round(elapsed, 3)}


class Budget:
    """Stops a run taking new chunks after ``seconds`` (None: never) or ``max_chunks`` chunks."""

    def __init__(self, seconds: float | None, max_chunks: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.max_chunks = max_chunks
        self._clock = clock
        self.started = clock()
        self.taken = 0

    def take(self) -> bool:
        """Whether one more chunk may start now (and count it when so)."""
        if self.exhausted():
            return False
        self.taken += 1
        return True

    def exhausted(self) -> bool:
        if self.max_chunks is not None and self.taken >= self.max_chunks:
            return True
        return self.seconds is not None and self._clock() - self.started >= self.seconds
