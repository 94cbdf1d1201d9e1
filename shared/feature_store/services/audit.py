"""The audit recorder: every read's record leaves the request at once and reaches the sink in batches.

``record()`` appends the read's rows to a bounded in-process queue and returns; a background thread
turns queued reads into rows (their digests computed there, off the request) and publishes them in
batches of up to ``batch_rows``. Guarantees (docs/security.md, "Audit trail and receipts"):

- **Never silently lost.** A row leaves the queue only once the sink accepted it; rows the sink
  refused stay at the front and are retried after ``retry_backoff_s``. With ``fail_closed`` (the
  production default) the queue never overflows: a read is refused instead, 503
  ``audit_unavailable``, whenever the sink is *behind* (the oldest unsent row is older than
  ``max_unsent_age_s``, or the queue is full), and reads resume by themselves once it caught up.
  Without it, reads are served, and each row dropped because the queue overflowed is counted
  (``dropped``) and logged at ERROR.
- **Survives stop.** ``close()`` (atexit; SIGTERM first becomes a normal exit where nobody else
  handles it, as in gunicorn's workers which exit normally on SIGTERM) sends what is queued for at
  most ``flush_on_exit_s``; what is still unsent then is counted and logged at ERROR.
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from feature_store.domain.audit import ReadAudit
from feature_store.errors import AuditUnavailable
from feature_store.logs import get_logger

log = get_logger(__name__)

Row = dict[str, Any]
YIELD_EVERY_ROWS = 100  # about 0.5 ms of row making between two yields of the interpreter


class AuditSink(Protocol):
    """Where audit rows go (stores/audit_sinks.py). ``publish`` returns the rows it could not send."""

    def publish(self, rows: Sequence[Row]) -> Sequence[Row]: ...


@dataclass(frozen=True)
class RecorderConfig:
    queue_rows: int = 100_000
    max_unsent_age_s: float = 10.0
    batch_rows: int = 500
    linger_s: float = 0.05
    retry_backoff_s: float = 0.5
    fail_closed: bool = True
    flush_on_exit_s: float = 5.0


@dataclass
class _Pending:
    seq: int
    queued_at: float
    rows: list[Row] | None  # made from ``audit`` by the sender thread
    audit: ReadAudit | None
    size: int


class AuditRecorder:
    """A bounded queue of audit rows and the thread that publishes them."""

    def __init__(self, sink: AuditSink, config: RecorderConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self.config = config
        self._clock = clock
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._seq = 0
        self._in_flight: set[int] = set()  # seqs of the reads the sender took and has not settled yet
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._send_lock = threading.Lock()  # one publish at a time: the thread's or close()'s
        self._closed = False
        self._failing_since: float | None = None
        self.sent = 0
        self.dropped = 0
        self.failed_publishes = 0
        self._thread = threading.Thread(target=self._run, name="audit-sender", daemon=True)
        self._thread.start()

    # --- the request's side ---------------------------------------------------------------------

    def check(self) -> None:
        """503 ``audit_unavailable`` when fail-closed and the sink is behind; call before reading."""
        if not self.config.fail_closed:
            return
        problem = self._behind()
        if problem is not None:
            raise AuditUnavailable(f"reads are refused while their audit records cannot be kept: {problem}",
                                   retry_after_s=max(1, round(self.config.retry_backoff_s * 2)))

    def record(self, audit: ReadAudit) -> None:
        """Queue one read's record (its rows are made later, by the sender thread)."""
        size = len(audit.vectors)
        with self._lock:
            if self._queued_rows + size > self.config.queue_rows:
                if self.config.fail_closed:
                    raise AuditUnavailable("reads are refused while their audit records cannot be kept: the "
                                           f"audit queue holds {self._queued_rows} rows, its bound")
                if not self._drop_oldest(size):
                    self._count_dropped(size)  # all queued reads are being sent: this one is the one dropped
                    return
            self._seq += 1
            self._queue.append(_Pending(self._seq, self._clock(), None, audit, size))
            self._queued_rows += size
            # Wake the sender only when there is something new for it: the first read of a batch, or a full
            # batch. A wake per read would end its linger at once and cost one publish per read.
            if len(self._queue) == 1 or self._queued_rows >= self.config.batch_rows:
                self._wake.notify()

    def _behind(self) -> str | None:
        with self._lock:
            if self._queued_rows >= self.config.queue_rows:
                return f"the audit queue holds {self._queued_rows} rows, its bound"
            if self._queue:
                age = self._clock() - self._queue[0].queued_at
                if age > self.config.max_unsent_age_s:
                    return f"the oldest unsent record is {age:.1f} s old (bound {self.config.max_unsent_age_s} s)"
        return None

    def _drop_oldest(self, room: int) -> bool:
        """Not fail-closed and full: make room by dropping the oldest reads, counted and logged; False if it cannot.

        A read the sender is publishing right now is never dropped: it may already be in the sink, and
        a row counted as dropped must never reach the trail.
        """
        dropped = 0
        busy: list[_Pending] = []
        while self._queue and self._queued_rows + room > self.config.queue_rows:
            oldest = self._queue.popleft()
            if oldest.seq in self._in_flight:
                busy.append(oldest)
                continue
            self._queued_rows -= oldest.size
            dropped += oldest.size
        self._queue.extendleft(reversed(busy))
        if dropped:
            self._count_dropped(dropped)
        return self._queued_rows + room <= self.config.queue_rows

    def _count_dropped(self, rows: int) -> None:
        self.dropped += rows
        log.error("audit rows dropped: the queue overflowed while the sink was unavailable",
                  extra={"fields": {"audit_dropped": rows, "audit_dropped_total": self.dropped}})

    # --- the sender's side ----------------------------------------------------------------------

    @property
    def pending_rows(self) -> int:
        with self._lock:
            return self._queued_rows

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                # Let a batch fill for up to linger_s: one publish call for many reads.
                deadline = time.monotonic() + self.config.linger_s
                while self._queued_rows < self.config.batch_rows and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
            if not self.send_once():
                time.sleep(self.config.retry_backoff_s)

    def _take(self) -> list[_Pending]:
        """The oldest reads, up to ``batch_rows`` rows (at least one read), still queued."""
        with self._lock:
            taken: list[_Pending] = []
            rows = 0
            for pending in self._queue:
                if taken and rows + pending.size > self.config.batch_rows:
                    break
                taken.append(pending)
                rows += pending.size
            self._in_flight = {p.seq for p in taken}
            return taken

    def send_once(self) -> bool:
        """Publish one batch; True when the sink took all of it (or there was nothing to send)."""
        with self._send_lock:
            taken = self._take()
            if not taken:
                return True
            made = 0
            for pending in taken:
                if pending.rows is None and pending.audit is not None:
                    pending.rows, pending.audit = pending.audit.rows(), None
                    made += pending.size
                    if made >= YIELD_EVERY_ROWS:
                        # Yield the interpreter now and then: the request threads of this process wait for it
                        # while rows are made (up to 5 ms, the switch interval). Not after every read: each
                        # yield under load is two thread switches, which cost a single read's rows over again.
                        time.sleep(0)
                        made = 0
            rows = [row for pending in taken for row in pending.rows or ()]
            try:
                unsent = list(self._sink.publish(rows))
            except Exception as exc:  # a sink error of any kind keeps every row
                log.warning("audit sink failed; the rows stay queued", extra={"fields": {"error": type(exc).__name__}})
                unsent = rows
            self._settle(taken, unsent)
            return not unsent

    def _settle(self, taken: list[_Pending], unsent: list[Row]) -> None:
        sent_seqs = {p.seq for p in taken}
        keep: dict[int, list[Row]] = {}
        if unsent:
            ids = {id(row) for row in unsent}
            for pending in taken:
                left = [row for row in pending.rows or () if id(row) in ids]
                if left:
                    keep[pending.seq] = left
        with self._lock:
            # Reads queued meanwhile are behind these; none of these was dropped meanwhile (_drop_oldest skips the
            # reads in flight), so each is still in the queue.
            survivors: deque[_Pending] = deque()
            for pending in self._queue:
                if pending.seq in sent_seqs:
                    left = keep.get(pending.seq, [])
                    if left:
                        self._queued_rows -= pending.size - len(left)
                        pending.rows, pending.size = left, len(left)
                        survivors.append(pending)
                    else:
                        self._queued_rows -= pending.size
                else:
                    survivors.append(pending)
            self._queue = survivors
            self._in_flight = set()
            sent = sum(p.size for p in taken) - sum(len(v) for v in keep.values())
            self.sent += sent
        if unsent:
            self.failed_publishes += 1
            if self._failing_since is None:
                self._failing_since = self._clock()
            log.warning("audit rows not accepted by the sink; kept and retried",
                        extra={"fields": {"audit_unsent": len(unsent), "audit_queued": self.pending_rows}})
        elif self._failing_since is not None:
            log.warning("audit sink accepts rows again", extra={"fields": {
                "audit_failing_s": round(self._clock() - self._failing_since, 3)}})
            self._failing_since = None

    # --- stop -----------------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> bool:
        """Send what is queued for at most ``timeout_s``; True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        while self.pending_rows:
            if time.monotonic() >= deadline:
                return False
            if not self.send_once():
                time.sleep(min(self.config.retry_backoff_s, max(0.0, deadline - time.monotonic())))
        return True

    def close(self) -> None:
        """Stop the thread and flush within ``flush_on_exit_s``; count and log what could not be sent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        deadline = time.monotonic() + self.config.flush_on_exit_s
        self._thread.join(self.config.flush_on_exit_s)
        if not self.flush(max(0.0, deadline - time.monotonic())):
            left = self.pending_rows
            self.dropped += left
            log.error("audit rows lost at exit: the sink did not take them in time",
                      extra={"fields": {"audit_dropped": left, "audit_dropped_total": self.dropped}})


def close_at_exit(recorder: AuditRecorder) -> None:
    """Flush ``recorder`` when the process exits; make SIGTERM an exit where nothing else handles it."""
    atexit.register(recorder.close)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, exit_on_sigterm)


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM as a normal exit (SystemExit): atexit hooks, the audit's flush among them, run."""
    raise SystemExit(128 + signum)
