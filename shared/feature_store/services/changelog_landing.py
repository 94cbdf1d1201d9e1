"""Landing changelog rows off the online write's critical path, without acknowledging anything early.

CDC ingestion writes a batch to the online store, hands the batch's changelog rows to ``Landing``
and goes on with the next batch; the messages of the batch are acknowledged only once their rows
have landed (each waits on the future ``submit`` returns), so delivery stays at least once: a
failed append fails every message whose rows it carried, and Pub/Sub redelivers them.

One thread lands, one append at a time: while an append runs, the rows of the batches that follow
queue, and the next append carries all of them (up to ``max_rows``). So BigQuery sees fewer, bigger
inserts as the load grows - an insertAll costs per call far more than per row (the emulator: about
5 ms of CPU per call, 0.01 ms per row; real BigQuery: a network round trip) - and the online store
never waits for the offline one. Waiting on purpose for more rows (a linger of 50 ms) was measured
and dropped: a push subscription's concurrency is bounded, so every millisecond added to an
acknowledgement is throughput lost (bench/ingest.py: 331 against 684 events/s).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future

from feature_store.domain.changes import Change
from feature_store.stores.ports import Changelog

Rows = Sequence[tuple[Change, str]]


class Landing:
    """Coalesces ``submit``-ted rows into appends on a thread of its own; each future resolves once its rows landed."""

    def __init__(self, changelog: Changelog, max_rows: int = 2000) -> None:
        self.changelog = changelog
        self.max_rows = max_rows
        self.appends = 0  # appends made (for tests and logs): fewer than submissions under load
        self._queue: deque[tuple[Rows, Future[int]]] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, rows: Rows) -> Future[int]:
        """Queue ``rows`` for the next append; the future gives how many landed, or the append's error."""
        future: Future[int] = Future()
        with self._ready:
            self._queue.append((rows, future))
            if self._thread is None or not self._thread.is_alive():
                # Started on first use, in the process that serves (never before a fork).
                self._thread = threading.Thread(target=self._run, name="changelog-landing", daemon=True)
                self._thread.start()
            self._ready.notify()
        return future

    def _take(self) -> list[tuple[Rows, Future[int]]]:
        """The oldest submissions, together at most ``max_rows`` rows (always at least one)."""
        with self._ready:
            self._ready.wait_for(lambda: bool(self._queue))
            taken = [self._queue.popleft()]
            size = len(taken[0][0])
            while self._queue and size + len(self._queue[0][0]) <= self.max_rows:
                size += len(self._queue[0][0])
                taken.append(self._queue.popleft())
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            try:
                self.changelog.append([row for rows, _ in taken for row in rows])
            except BaseException as exc:  # every message these rows came with is redelivered
                for _, future in taken:
                    future.set_exception(exc)
            else:
                for rows, future in taken:
                    future.set_result(len(rows))
            finally:
                self.appends += 1
