"""Group commit of the ingest function: who applies which batch, who waits, who gets which error.

The coordination is tested on its own here: ``_apply_batch`` is replaced by one that records the
batches it is given (the stores it would call are covered by tests/integration/test_ingest.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from feature_store.services.ingest import Ingestor, _Pending


class Recording(Ingestor):
    def __init__(self, max_inflight: int, max_batch: int = 256, fail: str | None = None) -> None:
        super().__init__([], None, None, max_batch=max_batch, max_inflight=max_inflight)  # type: ignore[arg-type]
        self.batches: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.fail = fail
        self._guard = threading.Lock()

    def _apply_batch(self, batch: Sequence[_Pending]) -> None:
        with self._guard:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append([p.message_id for p in batch])
        time.sleep(0.005)  # long enough for the other threads to queue behind this batch
        with self._guard:
            self.running -= 1
        if self.fail in (p.message_id for p in batch):
            raise RuntimeError(f"batch holding {self.fail} failed")


def run_threads(ingestor: Recording, ids: list[str]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    start = threading.Barrier(len(ids))

    def one(message_id: str) -> None:
        start.wait()
        try:
            ingestor.apply([], message_id)
            outcome[message_id] = "ok"
        except RuntimeError as exc:
            outcome[message_id] = exc

    threads = [threading.Thread(target=one, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a thread never returned"
    return outcome


@pytest.mark.parametrize("max_inflight", [1, 2, 3])
def test_every_message_is_applied_once_in_batches_and_every_caller_returns(max_inflight: int) -> None:
    ingestor = Recording(max_inflight)
    ids = [f"m{i}" for i in range(40)]

    outcome = run_threads(ingestor, ids)

    assert outcome == dict.fromkeys(ids, "ok")
    applied = [m for batch in ingestor.batches for m in batch]
    assert sorted(applied) == sorted(ids)  # each exactly once
    assert ingestor.most_running <= max_inflight
    assert len(ingestor.batches) < len(ids)  # messages that queued meanwhile went together
    assert ingestor._inflight == 0 and ingestor._queue == []


def test_batches_are_capped_at_max_batch() -> None:
    ingestor = Recording(1, max_batch=4)
    ids = [f"m{i}" for i in range(30)]

    assert run_threads(ingestor, ids) == dict.fromkeys(ids, "ok")
    assert max(len(b) for b in ingestor.batches) <= 4
    assert sorted(m for b in ingestor.batches for m in b) == sorted(ids)


def test_a_failed_batch_raises_for_its_messages_only() -> None:
    ingestor = Recording(1, fail="m7")
    ids = [f"m{i}" for i in range(24)]

    outcome = run_threads(ingestor, ids)

    failed = next(b for b in ingestor.batches if "m7" in b)
    for message_id in ids:
        if message_id in failed:
            assert isinstance(outcome[message_id], RuntimeError), message_id
        else:
            assert outcome[message_id] == "ok", message_id
    assert ingestor._inflight == 0  # the slot was released: later messages still apply
    ingestor.apply([], "after")
    assert ingestor.batches[-1] == ["after"]
