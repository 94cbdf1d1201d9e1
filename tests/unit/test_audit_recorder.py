"""The audit recorder over a sink of this test: nothing lost, nothing twice, fail-closed bounds, flush at exit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from feature_store.domain.audit import ReadAudit, VectorAudit
from feature_store.errors import AuditUnavailable
from feature_store.services.audit import AuditRecorder, RecorderConfig

Row = dict[str, Any]


class Sink:
    """Keeps what it accepts; ``down`` refuses everything, ``refuse`` refuses rows of some users."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.calls = 0
        self.down = False
        self.refuse: set[str] = set()
        self.lock = threading.Lock()

    def publish(self, rows: Sequence[Row]) -> Sequence[Row]:
        with self.lock:
            self.calls += 1
            if self.down:
                raise ConnectionError("sink down")
            unsent = [r for r in rows if r["user_id"] in self.refuse]
            self.rows.extend(r for r in rows if r["user_id"] not in self.refuse)
            return unsent

    def sent_keys(self) -> list[tuple[str, int]]:
        with self.lock:
            return [(r["request_id"], r["position"]) for r in self.rows]


def read(n: int, users: int = 1, prefix: str = "u") -> ReadAudit:
    vectors = tuple(VectorAudit(f"{prefix}{i}", "ok", True, "0/1", "2026-12-02T13:00:00.000+00:00", 1.0,
                                features={"g": {"f": i}}) for i in range(users))
    return ReadAudit(f"req{n:06d}", "lender-checkout", "batch" if users > 1 else "single", "rest", "credit_decision", 2,
                     ("f",), 2.0, 3.0, vectors)


def config(**changes: Any) -> RecorderConfig:
    base = {"queue_rows": 10_000, "max_unsent_age_s": 0.3, "batch_rows": 50, "linger_s": 0.001,
            "retry_backoff_s": 0.02, "fail_closed": True, "flush_on_exit_s": 5.0}
    return RecorderConfig(**{**base, **changes})


def wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_concurrent_reads_give_exactly_one_row_per_user_of_each_read() -> None:
    sink = Sink()
    recorder = AuditRecorder(sink, config())
    threads = [threading.Thread(target=lambda t=t: [recorder.record(read(t * 1000 + i, users=1 + i % 3))
                                                   for i in range(200)]) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    wait_for(lambda: recorder.pending_rows == 0)

    keys = sink.sent_keys()
    assert len(keys) == len(set(keys)) == 8 * sum(1 + i % 3 for i in range(200))
    assert sink.calls < len({k[0] for k in keys}), "rows of many reads go in one publish call"
    recorder.close()


def test_rows_the_sink_refused_stay_queued_and_are_retried_alone() -> None:
    sink = Sink()
    sink.refuse = {"u1"}
    recorder = AuditRecorder(sink, config(fail_closed=False))
    for n in range(20):
        recorder.record(read(n, users=3))
    wait_for(lambda: len(sink.rows) == 40)
    assert recorder.pending_rows == 20

    sink.refuse = set()
    wait_for(lambda: recorder.pending_rows == 0)

    keys = sink.sent_keys()
    assert len(keys) == len(set(keys)) == 60
    recorder.close()


def test_fail_closed_refuses_reads_once_the_oldest_unsent_row_is_too_old_and_resumes_after() -> None:
    sink = Sink()
    recorder = AuditRecorder(sink, config())
    sink.down = True
    recorder.record(read(1))
    recorder.check()  # young: reads still go on

    time.sleep(0.4)
    with pytest.raises(AuditUnavailable) as refused:
        recorder.check()
    assert refused.value.code == "audit_unavailable" and refused.value.status == 503
    assert refused.value.retry_after_s >= 1

    sink.down = False
    wait_for(lambda: recorder.pending_rows == 0)
    recorder.check()
    assert sink.sent_keys() == [("req000001", 0)]
    recorder.close()


def test_fail_closed_never_overflows_the_queue() -> None:
    sink = Sink()
    sink.down = True
    recorder = AuditRecorder(sink, config(queue_rows=100, max_unsent_age_s=60))
    for n in range(10):
        recorder.record(read(n, users=10))

    with pytest.raises(AuditUnavailable, match="100 rows"):
        recorder.record(read(99))
    with pytest.raises(AuditUnavailable):
        recorder.check()
    assert recorder.dropped == 0

    sink.down = False
    wait_for(lambda: recorder.pending_rows == 0)
    assert len(sink.sent_keys()) == 100
    recorder.close()


def test_fail_open_overflow_drops_the_oldest_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    sink.down = True
    recorder = AuditRecorder(sink, config(queue_rows=100, fail_closed=False))
    with caplog.at_level(logging.ERROR):
        for n in range(12):
            recorder.record(read(n, users=10))
    recorder.check()  # never refuses

    assert recorder.dropped == 20
    assert any("dropped" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    sink.down = False
    wait_for(lambda: recorder.pending_rows == 0)
    # The oldest reads go, except one the sender was publishing at that instant (never dropped: the sink may
    # hold it already): exactly 10 whole reads arrive, the newest among them, and every row is sent or counted.
    keys = sink.sent_keys()
    sent = {k[0] for k in keys}
    assert len(keys) == len(set(keys)) == 100 and len(sent) == 10
    assert {"req000010", "req000011"} <= sent
    assert len(keys) + recorder.dropped == 120
    recorder.close()


def test_close_sends_what_is_queued_and_counts_what_it_could_not(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    recorder = AuditRecorder(sink, config(linger_s=10.0, batch_rows=10_000))
    for n in range(30):
        recorder.record(read(n))
    recorder.close()
    assert len(sink.sent_keys()) == 30 and recorder.dropped == 0

    down = Sink()
    down.down = True
    stuck = AuditRecorder(down, config(flush_on_exit_s=0.2, fail_closed=False))
    stuck.record(read(1, users=4))
    with caplog.at_level(logging.ERROR):
        stuck.close()
    assert stuck.dropped == 4
    assert any("lost at exit" in r.getMessage() for r in caplog.records)


def test_reads_within_one_linger_share_one_publish() -> None:
    # A read arriving while the sender lingers must not end the linger: one publish per read is what made
    # the audit cost a Pub/Sub call per request (bench/serving.py's guard figures).
    sink = Sink()
    recorder = AuditRecorder(sink, config(linger_s=2.0, batch_rows=1000))
    try:
        for n in range(10):  # as reads arrive at c=1: one at a time, the sender awake in between
            recorder.record(read(n))
            time.sleep(0.01)
        assert sink.calls == 0, "the linger is not over yet"
        wait_for(lambda: len(sink.rows) == 10)
        assert sink.calls == 1
    finally:
        recorder.close()


def test_a_full_batch_goes_out_without_waiting_for_the_linger() -> None:
    sink = Sink()
    recorder = AuditRecorder(sink, config(linger_s=30.0, batch_rows=50))
    try:
        started = time.monotonic()
        for n in range(5):
            recorder.record(read(n, users=10))
        wait_for(lambda: len(sink.rows) == 50, seconds=5.0)
        assert time.monotonic() - started < 5.0
    finally:
        recorder.close()


def test_a_read_being_published_is_never_dropped_and_every_row_is_sent_or_counted() -> None:
    # The sender holds read 0 in a publish that does not return; reads 1-4 overflow the queue (fail open).
    # Dropping read 0 then would count rows the sink may already hold: the oldest reads *not* in flight go.
    release = threading.Event()
    sink = Sink()
    first_call = threading.Event()
    publish = sink.publish

    def slow_publish(rows: Sequence[Row]) -> Sequence[Row]:
        first_call.set()
        release.wait(10)
        return publish(rows)

    sink.publish = slow_publish  # type: ignore[method-assign]
    recorder = AuditRecorder(sink, config(queue_rows=30, fail_closed=False, linger_s=0.0))
    try:
        recorder.record(read(0, users=10))
        assert first_call.wait(5)
        for n in range(1, 5):
            recorder.record(read(n, users=10))
        release.set()
        wait_for(lambda: recorder.pending_rows == 0)

        sent = {k[0] for k in sink.sent_keys()}
        assert "req000000" in sent
        assert len(sink.rows) + recorder.dropped == 50
        assert recorder.dropped == 20 and sent == {"req000000", "req000003", "req000004"}
    finally:
        release.set()
        recorder.close()
