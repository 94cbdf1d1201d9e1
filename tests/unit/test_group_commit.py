"""Group commit of the ingest function: who applies which batch, who waits, who gets which error.

The coordination is tested on its own here: ``_apply_batch`` is replaced by one that records the
batches it is given (the stores it would call are covered by tests/integration/test_ingest.py).
No sleep decides anything: every batch is held at a gate until every message of the test has
entered the ingestor (queued, or taken into a batch), so which thread applies what is forced,
not hoped for; every wait has a timeout that fails the test.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from feature_store.services.ingest import Ingestor, _Pending

WAIT_S = 10.0


class Recording(Ingestor):
    """An ingestor whose batches are recorded and held at a gate until ``open_gate()``."""

    def __init__(self, max_inflight: int, max_batch: int = 256, fail: str | None = None) -> None:
        super().__init__(None, None, None, max_batch=max_batch, max_inflight=max_inflight)  # type: ignore[arg-type]
        self.batches: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.fail = fail
        self.entered = threading.Condition()  # notified whenever a message is queued or a batch starts
        self._queue = _Observed(self.entered)
        self._gate = threading.Event()

    def _apply_batch(self, batch: Sequence[_Pending]) -> None:
        with self.entered:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append([p.message_id for p in batch])
            self.entered.notify_all()
        try:
            if not self._gate.wait(WAIT_S):
                raise AssertionError("the gate was never opened")
        finally:
            with self.entered:
                self.running -= 1
        if self.fail in (p.message_id for p in batch):
            raise RuntimeError(f"batch holding {self.fail} failed")

    def wait_until_all_entered(self, count: int) -> None:
        """Until ``count`` messages are queued or in a batch that started; fails loudly after WAIT_S."""
        with self.entered:
            if not self.entered.wait_for(lambda: len(self._queue) + sum(map(len, self.batches)) >= count, WAIT_S):
                raise AssertionError(f"only {len(self._queue)} queued and {self.batches} started of {count}")

    def open_gate(self) -> None:
        self._gate.set()


class _Observed(list[_Pending]):
    """The ingestor's queue, telling a condition about every message put in it."""

    def __init__(self, condition: threading.Condition) -> None:
        super().__init__()
        self._condition = condition

    def append(self, item: _Pending) -> None:
        super().append(item)
        with self._condition:  # taken inside the ingestor's lock; nothing takes them the other way round
            self._condition.notify_all()


def run_threads(ingestor: Recording, ids: list[str]) -> dict[str, Any]:
    """One thread per message, all started together; the gate opens once every message is in."""
    outcome: dict[str, Any] = {}
    start = threading.Barrier(len(ids))

    def one(message_id: str) -> None:
        start.wait(WAIT_S)
        try:
            ingestor.apply([], message_id)
            outcome[message_id] = "ok"
        except RuntimeError as exc:
            outcome[message_id] = exc

    threads = [threading.Thread(target=one, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    try:
        ingestor.wait_until_all_entered(len(ids))
    finally:
        ingestor.open_gate()
        for t in threads:
            t.join(WAIT_S)
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
    # The first max_inflight messages each started a batch and were held there together; everything
    # else queued behind them and went in one more batch (max_batch 256).
    assert ingestor.most_running == max_inflight
    assert [len(b) for b in ingestor.batches] == [1] * max_inflight + [len(ids) - max_inflight]
    assert ingestor._inflight == 0 and ingestor._queue == []


def test_batches_are_capped_at_max_batch() -> None:
    ingestor = Recording(1, max_batch=4)
    ids = [f"m{i}" for i in range(30)]

    assert run_threads(ingestor, ids) == dict.fromkeys(ids, "ok")

    # One message held at the gate, then the other 29 in batches of at most 4, oldest first.
    assert [len(b) for b in ingestor.batches] == [1, 4, 4, 4, 4, 4, 4, 4, 1]
    assert sorted(m for b in ingestor.batches for m in b) == sorted(ids)
    assert ingestor.most_running == 1


def test_a_failed_batch_raises_for_its_messages_only() -> None:
    ingestor = Recording(1, max_batch=5, fail="m7")
    ids = [f"m{i}" for i in range(24)]

    outcome = run_threads(ingestor, ids)

    failed = next(b for b in ingestor.batches if "m7" in b)
    assert len(ingestor.batches) > 2  # the failing batch is one of several
    for message_id in ids:
        if message_id in failed:
            assert isinstance(outcome[message_id], RuntimeError), message_id
        else:
            assert outcome[message_id] == "ok", message_id
    assert ingestor._inflight == 0  # the slot was released: later messages still apply
    ingestor.apply([], "after")
    assert ingestor.batches[-1] == ["after"]
