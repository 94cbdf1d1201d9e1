"""Verification: chunked checksums of ordered rows on both sides, rechecks, and repair of what still differs.

Pass 1 walks each table in source-key chunks (bounds from the sending side) and compares the count and
md5 of the ordered rows on both sides, the two computed at once, with ``workers`` chunks in flight (one
chunk at a time left each database idle while the other finished and while the next bound was read);
results are recorded per chunk in chunk order (fs_migration_checks), so a verification interrupted by its
time budget resumes at the next chunk.

A chunk that differs may only be catching up: rows written while it was read reach the receiving side within
the replication lag. It is compared again, row by row, up to ``recheck_attempts`` times: the sending side's
rows from a *settled* read tagged with its position ``w`` (below), then, ``recheck_delay_s`` later, the
receiving side's rows with their replica positions. When the replication has measured a longer lag lately (the
last batch it applied, fs_replication_progress), the wait follows it: twice that lag, at most
``LAG_WAIT_CAP_S`` (a replication catching up after an outage is seconds behind, and a fixed short wait made
every recheck find its backlog missing, then the repair, then the verdict "different"). A row whose replica
position is above ``w`` changed after that read and is left to the replication, except in ``strict`` mode (the
cutover's final verification, with the source quiet), where every difference counts. A chunk with no differing
row left is ``settled``.

What still differs is repaired: the differing rows are re-copied from a settled read of the sending side at
its position ``w``, through the same compare-and-set as the replication (stores/migration_replica.py): a row
the replication has since written with a newer change keeps it. The chunk is compared once more:
``repaired`` when equal, else it stays ``different`` and is listed in the answer.

Why the read must be settled, and how (stores/migration_chunks.settled_rows). A re-copied row lands at
position ``w`` and refuses every later image at or below ``w``; so every change at or below ``w`` must
already be in the rows read, or it is lost. What a change's position is decides what can be missing:

- PostgreSQL forward: Debezium's ``source.lsn`` (emulators/cdc_relay.py: wal2json's per-change ``lsn``, or
  test_decoding's row ``lsn``) is the LSN of the change's own WAL record, not of its commit. A transaction
  that wrote a row before ``w`` was read and commits after the snapshot carries a position below ``w``
  that no snapshot taken at ``w`` contains. And a record written after ``w`` was read starts at or
  after it: its position may equal ``w``. So the PostgreSQL read waits, at most ``settle_wait_s``, for the
  writers open when ``w`` was read (their xid locks, pg_locks), reads the rows from a snapshot taken after
  the last of them ended, and tags them ``w - 1``. Every change below ``w`` is then in the rows (its
  transaction had committed by then or was waited for), and every later one outranks them. Writers that
  start later are not waited for, so a stream of short writers delays the read by about one transaction;
  only a writer left open past ``settle_wait_s`` postpones the repair (logged; the chunk stays
  ``different``). A delete image (the key absent on the sender) is covered the same way: an insert of the
  key by a writer open at ``w`` is waited for and read.
- CockroachDB (the reverse direction after the cutover): a changefeed's ``updated`` is the transaction's
  commit timestamp, and a read at the transaction timestamp fixed by ``cluster_logical_timestamp()`` is
  exact (later commits get a higher timestamp); nothing is waited for.
- The rehearsal's reverse direction (emulators/changefeed_relay.py over a PostgreSQL target) uses commit
  LSNs: a transaction open at the snapshot commits above ``w`` except in the moment between its commit
  record's flush and its becoming visible, which the wait covers as well.

Rejected: locking the differing rows ``FOR SHARE`` before reading ``w`` (it blocks the application's writes
and can make it a deadlock victim, needs UPDATE privilege on the source, and cannot lock an absent key,
which needs the wait anyway); a snapshot with no writer open at all (never happens on a busy source, and
``pg_snapshot_xip`` does not list writers whose xid came after the newest commit, so it was not exact).
The rechecks read settled too: a read that missed an open writer's change below ``w`` found the replicated
change "not newer" and reported its row as different.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from feature_store.logs import get_logger
from feature_store.stores.dialect import Dialect
from feature_store.stores.migration_chunks import (
    Checksum,
    Snapshot,
    bound,
    checksum,
    fetch,
    keyed,
    settled_rows,
)
from feature_store.stores.migration_replica import Image, ReplicaStore
from feature_store.stores.migration_state import StateStore
from feature_store.stores.migration_tables import (
    MIGRATED,
    KeyValue,
    TableSpec,
    key_value,
    load_spec,
    newer_sql,
    row_hashes_sql,
    rows_sql,
)
from feature_store.stores.postgres import PostgresPool

log = get_logger(__name__)

LAG_WAIT_CAP_S = 30.0  # the longest a recheck waits for a lagging replication
SETTLE_WAIT_S = 5.0  # the longest a read of the sender waits for the writers open at its watermark


@dataclass(frozen=True)
class Side:
    """One database of the pair: where changes come from (sender) or go to (receiver)."""

    pool: PostgresPool
    dialect: Dialect


@dataclass(frozen=True)
class _InFlight:
    """A chunk of pass 1 whose two checksums are being computed."""

    chunk: int
    after: KeyValue | None
    last: KeyValue | None
    mine: Future[Checksum]
    theirs: Future[Checksum]


@dataclass(frozen=True)
class RowDiff:
    position: int
    keys: set[KeyValue]  # differing rows not changed since the snapshot at ``position``
    in_flight: int  # rows changed on the receiving side after it


class Verifier:
    """Compares the migrated tables of two databases and repairs the receiving side."""

    def __init__(self, sender: Side, receiver: Side, replica: ReplicaStore, state: StateStore, chunk_rows: int,
                 recheck_attempts: int, recheck_delay_s: float, strict: bool = False, workers: int = 2,
                 direction: str | None = None, settle_wait_s: float = SETTLE_WAIT_S,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.sender, self.receiver = sender, receiver
        self.replica = replica
        self.state = state
        self.chunk_rows = chunk_rows
        self.recheck_attempts = recheck_attempts
        self.recheck_delay_s = recheck_delay_s
        self.strict = strict  # rows changed after the snapshot count as different (the cutover's check)
        self.workers = workers  # chunks of pass 1 in flight: 2 keep both databases' cores busy between statements
        self.direction = direction  # the replication feeding the receiver, whose lag the rechecks wait out
        self.settle_wait_s = settle_wait_s
        self._clock, self._sleep = clock, sleep
        self._specs: dict[str, TableSpec] = {}

    def spec(self, table: str) -> TableSpec:
        if table not in self._specs:
            with self.sender.pool.connection() as conn:
                self._specs[table] = load_spec(conn, table)
        return self._specs[table]

    def run(self, job: str, budget_s: float, tables: tuple[str, ...] = MIGRATED) -> dict[str, Any]:
        """Compare (pass 1), recheck and repair until done or out of time; the answer lists what differs."""
        started = self._clock()
        deadline = started + budget_s
        compared = self._pass1(job, tables, deadline)
        pass1_done = all(self._table_done(job, t) for t in tables)
        if pass1_done:
            for check in self.state.checks(job, "different"):
                if self._clock() > deadline and compared:
                    break
                self._settle(job, check)
                compared += 1
        checks = self.state.checks(job)
        different = [c for c in checks if c["status"] == "different"]
        unsettled = [c for c in different if c["attempts"] <= self.recheck_attempts]
        done = pass1_done and not unsettled
        answer = {"job": job, "done": done, "ok": done and not different,
                  "seconds": round(self._clock() - started, 3), "tables": self._summary(checks, tables),
                  "different": [_brief(c) for c in different],
                  "repaired": [_brief(c) for c in checks if c["status"] == "repaired"],
                  "settled": sum(1 for c in checks if c["status"] == "settled")}
        log.info("verification call finished",
                 extra={"fields": {k: answer[k] for k in ("job", "done", "ok", "seconds")}})
        return answer

    # --- pass 1 -------------------------------------------------------------------------------

    def _table_done(self, job: str, table: str) -> bool:
        checks = [c for c in self.state.checks(job) if c["table"] == table]
        return bool(checks) and checks[-1]["last"] is None

    def _pass1(self, job: str, tables: tuple[str, ...], deadline: float) -> int:
        """Compare every chunk not yet compared, ``workers`` chunks in flight (each with its two checksums at
        once), recorded in chunk order so that a call stopped anywhere resumes after the last recorded one."""
        compared = 0
        with ThreadPoolExecutor(2 * self.workers, thread_name_prefix="checksum") as sides:
            for table in tables:
                spec = self.spec(table)
                done = [c for c in self.state.checks(job) if c["table"] == table]
                if done and done[-1]["last"] is None:
                    continue
                chunk = len(done)
                after = done[-1]["last"] if done else None
                window: deque[_InFlight] = deque()
                more = True
                while more or window:
                    # Start chunks while there is time (always one per call); the next bound is read while
                    # the chunks in flight are being summed.
                    while more and len(window) < self.workers and (
                            self._clock() <= deadline or not (compared or window)):
                        last = bound(self.sender.pool, spec, after, self.chunk_rows)
                        window.append(_InFlight(
                            chunk, after, last,
                            sides.submit(checksum, self.sender.pool, self.sender.dialect, spec, after, last),
                            sides.submit(checksum, self.receiver.pool, self.receiver.dialect, spec, after, last)))
                        chunk, after, more = chunk + 1, last, last is not None
                    if not window:
                        return compared  # out of time before this table's next chunk
                    head = window.popleft()
                    s, r = head.mine.result(), head.theirs.result()
                    status = "equal" if (s.rows, s.md5) == (r.rows, r.md5) else "different"
                    self.state.record_check(job, table, head.chunk, head.after, head.last, (s.rows, s.md5),
                                            (r.rows, r.md5), status, 0)
                    compared += 1
        return compared

    # --- rechecks and repair ------------------------------------------------------------------

    def row_diff(self, spec: TableSpec, after: KeyValue | None, last: KeyValue | None) -> RowDiff:
        """Rows that differ between the sides, leaving out rows the receiver changed after the snapshot.

        The receiving side is read ``recheck_delay_s`` after the sending side's settled read: a change in that
        read has had the replication's lag to arrive, and one not in it is either absent from both reads or
        already applied with a position above the read's (left out). So
        writes that keep arriving in a range do not make it differ; a change still missing after the delay
        does.
        """
        width = len(spec.key)
        taken = self._sender_rows(row_hashes_sql(spec, self.sender.dialect.name, after, last))
        position, rows = taken.position, taken.rows
        mine = {k: v[0] for k, v in keyed(rows, width).items()}
        self._sleep(self.recheck_wait_s())
        theirs_rows = keyed(fetch(self.receiver.pool, row_hashes_sql(spec, self.receiver.dialect.name, after, last,
                                                                     with_position=True)), width)
        newer = {k for k, (_, pos) in theirs_rows.items() if pos is not None and int(pos) > position}
        newer |= set(keyed(fetch(self.receiver.pool, newer_sql(spec, after, last), w=str(position)), width))
        theirs = {k: v[0] for k, v in theirs_rows.items()}
        keys = {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
        return RowDiff(position, keys if self.strict else keys - newer, len(newer))

    def recheck_wait_s(self) -> float:
        """How long a recheck gives the replication: ``recheck_delay_s``, or twice its recent lag when longer
        (not in ``strict`` mode: the cutover verifies only once the replication has been quiet)."""
        if self.direction is None or self.strict:
            return self.recheck_delay_s
        return max(self.recheck_delay_s, min(LAG_WAIT_CAP_S, 2 * self.replica.recent_lag_s(self.direction)))

    def _settle(self, job: str, check: dict[str, Any]) -> None:
        spec = self.spec(check["table"])
        after, last = check["after"], check["last"]
        attempts = check["attempts"]
        diff = self.row_diff(spec, after, last)
        while diff.keys and attempts < self.recheck_attempts:
            attempts += 1
            diff = self.row_diff(spec, after, last)
        status = "settled"
        if diff.keys:
            repaired = self.repair(spec, after, last, diff.keys)
            diff = self.row_diff(spec, after, last)
            status = "different" if diff.keys else "repaired"
            log.warning("chunk repaired" if not diff.keys else "chunk still differs after repair", extra={"fields": {
                "job": job, "table": spec.name, "chunk": check["chunk"], "rows_rewritten": repaired,
                "rows_still_different": len(diff.keys)}})
        mine = checksum(self.sender.pool, self.sender.dialect, spec, after, last)
        theirs = checksum(self.receiver.pool, self.receiver.dialect, spec, after, last)
        self.state.record_check(job, spec.name, check["chunk"], after, last, (mine.rows, mine.md5),
                                (theirs.rows, theirs.md5), status, attempts + 1)

    def repair(self, spec: TableSpec, after: KeyValue | None, last: KeyValue | None, keys: set[KeyValue]) -> int:
        """Re-copy ``keys`` of the range from a settled read of the sender at its position, through the
        replication's compare-and-set; how many rows were rewritten (0 when the read could not settle)."""
        taken = self._sender_rows(rows_sql(spec, after, last))
        if not taken.settled:
            log.warning("repair postponed: a writer of the sending database open at its watermark stayed open",
                        extra={"fields": {"table": spec.name, "waited_s": self.settle_wait_s}})
            return 0
        position, rows = taken.position, taken.rows
        at = [spec.names.index(c) for c in spec.key]
        found = {key_value([r[i] for i in at]): r for r in rows}
        images = []
        for key in sorted(keys):
            row = found.get(key)
            if row is None:
                images.append(Image(spec.name, key, position, None))
            else:
                images.append(Image(spec.name, tuple(row[i] for i in at), position,
                                    dict(zip(spec.names, row, strict=True))))
        return self.replica.apply(images).applied

    def _sender_rows(self, sql: str) -> Snapshot:
        return settled_rows(self.sender.pool, self.sender.dialect, sql, self.settle_wait_s, self._sleep, self._clock)

    @staticmethod
    def _summary(checks: list[dict[str, Any]], tables: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in tables:
            mine = [c for c in checks if c["table"] == table]
            out[table] = {"chunks": len(mine), "source_rows": sum(c["source_rows"] for c in mine),
                          "target_rows": sum(c["target_rows"] for c in mine),
                          "source_checksum": _digest(c["source_sum"] for c in mine),
                          "target_checksum": _digest(c["target_sum"] for c in mine)}
        return out


def _digest(parts: Any) -> str:
    return hashlib.md5("\n".join(parts).encode()).hexdigest()


def _brief(check: dict[str, Any]) -> dict[str, Any]:
    return {k: check[k] for k in ("table", "chunk", "after", "last", "source_rows", "target_rows", "attempts")}
