"""CDC ingestion against real PostgreSQL and Redis: convergence whatever the order, number and timing
of deliveries (hypothesis), deletes, moved rows, concurrency, and transient faults.

Change events are built from the rows each statement really changed (RETURNING), in Debezium's
envelope, with the LSN of their commit; the relay's own decoding is covered by test_ingest_relay.py.

Delivered one after another, every event is recomputed from a snapshot newer than anything stored,
so the compare-and-set would never refuse a write and could be removed unnoticed. The tests that
are about the compare-and-set therefore force the interleaving that needs it: two batches in flight
(FS_CDC_MAX_INFLIGHT=2), one of them held by ``Gate`` between its snapshot and its write while a
newer commit is delivered and written; released, its stale write must be refused, and the refused
writes are counted (``Writes``). Every wait has a timeout that fails the test.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import Databases, admin_connection, base_env, closed_port
from feature_store.domain.catalog import CREDIT_DECISION_V1, Instant
from feature_store.domain.state import UserState
from feature_store.errors import DependencyUnavailable
from feature_store.services.ingest import Ingestor
from feature_store.stores.ports import Entry, OnlineStore, Source, Tombstone
from reference import reference_features

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "emulators"))
from debezium_wire import debezium_event

NOW = datetime.now(UTC).replace(microsecond=0)
WAIT_S = 30.0  # the longest any step of these tests waits for another thread before failing


class SourceHistory:
    """Runs single-row statements on the source and returns the Debezium event of each row change."""

    def __init__(self, conn: pg8000.native.Connection, with_schema: bool = False) -> None:
        self.conn = conn
        self.with_schema = with_schema
        self._columns: dict[str, dict[str, tuple[str, bool]]] = {}

    def columns(self, table: str) -> dict[str, tuple[str, bool]]:
        if table not in self._columns:
            rows = self.conn.run("SELECT attname::text, format_type(atttypid, atttypmod), NOT attnotnull "
                                 "FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 "
                                 "AND NOT attisdropped ORDER BY attnum", t=table)
            self._columns[table] = {n: (t, o) for n, t, o in rows}
        return self._columns[table]

    def change(self, table: str, where: str, dml: str, **params: Any) -> list[bytes]:
        """Run ``dml`` (with RETURNING *) in one transaction; the row images come from the database itself."""
        names = list(self.columns(table))
        self.conn.run("BEGIN")
        try:
            before = [dict(zip(names, r, strict=True)) for r in
                      self.conn.run(f"SELECT * FROM {table} WHERE {where} FOR UPDATE", **params)]
            after = [dict(zip(names, r, strict=True)) for r in self.conn.run(dml, **params)]
            xid = int(self.conn.run("SELECT txid_current()")[0][0])
            self.conn.run("COMMIT")
        except Exception:
            self.conn.run("ROLLBACK")
            raise
        lsn = int(self.conn.run("SELECT pg_current_wal_lsn() - CAST('0/0' AS pg_lsn)")[0][0])
        ts_ms = int(datetime.now(UTC).timestamp() * 1000)
        if dml.lstrip().upper().startswith("DELETE"):
            images = [(b, None) for b in before]
        elif before:
            images = [(b, a) for b, a in zip(before, after, strict=False)]
        else:
            images = [(None, a) for a in after]
        op = {(True, False): "d", (True, True): "u", (False, True): "c"}
        return [debezium_event(server="fs", db="test", table=table, op=op[(b is not None, a is not None)],
                               lsn=lsn - len(images) + i, commit_lsn=lsn, tx_id=xid, ts_ms=ts_ms, before=b, after=a,
                               columns=self.columns(table), with_schema=self.with_schema)
                for i, (b, a) in enumerate(images)]

    # --- the statements the property test draws from ---------------------------------------------

    def add_user(self, uid: str, age: int) -> list[bytes]:
        return self.change("users", "user_id = :u", "INSERT INTO users (user_id, age, location_country, signup_date, "
                           "verification_status) VALUES (:u, :a, 'DE', :d, 'verified') ON CONFLICT DO NOTHING "
                           "RETURNING *", u=uid, a=age, d=date(2024, 1, 1))

    def update_user(self, uid: str, age: int) -> list[bytes]:
        return self.change("users", "user_id = :u", "UPDATE users SET age = :a WHERE user_id = :u RETURNING *",
                           u=uid, a=age)

    def delete_user(self, uid: str) -> list[bytes]:
        return self.change("users", "user_id = :u", "DELETE FROM users WHERE user_id = :u RETURNING *", u=uid)

    def add_order(self, tid: str, uid: str, amount: Decimal, status: str, age_s: int) -> list[bytes]:
        return self.change("transactions", "transaction_id = :t",
                           "INSERT INTO transactions (transaction_id, user_id, amount, merchant, category, status, "
                           "created_at) VALUES (:t, :u, :a, 'm1', 'books', :s, :c) RETURNING *",
                           t=tid, u=uid, a=amount, s=status, c=NOW - timedelta(seconds=age_s))

    def move_order(self, tid: str, uid: str) -> list[bytes]:
        return self.change("transactions", "transaction_id = :t",
                           "UPDATE transactions SET user_id = :u WHERE transaction_id = :t RETURNING *", t=tid, u=uid)

    def set_order_status(self, tid: str, status: str) -> list[bytes]:
        return self.change("transactions", "transaction_id = :t",
                           "UPDATE transactions SET status = :s WHERE transaction_id = :t RETURNING *", t=tid, s=status)

    def delete_order(self, tid: str) -> list[bytes]:
        return self.change("transactions", "transaction_id = :t",
                           "DELETE FROM transactions WHERE transaction_id = :t RETURNING *", t=tid)

    def set_risk(self, uid: str, score: Decimal) -> list[bytes]:
        return self.change("risk_scores", "user_id = :u",
                           "INSERT INTO risk_scores (user_id, risk_score) VALUES (:u, :r) ON CONFLICT (user_id) "
                           "DO UPDATE SET risk_score = :r RETURNING *", u=uid, r=score)

    def add_plan(self, pid: str, uid: str, paid: int) -> list[bytes]:
        events = self.change("installment_plans", "plan_id = :p",
                             "INSERT INTO installment_plans (plan_id, user_id, transaction_id, principal, status, "
                             "created_at) VALUES (:p, :u, 'tx', 40, 'active', :c) RETURNING *", p=pid, u=uid, c=NOW)
        for seq in range(1, 3):
            events += self.change(
                "installments", "plan_id = :p AND seq = :s",
                "INSERT INTO installments (plan_id, seq, user_id, due_date, amount, paid_at) "
                "VALUES (:p, :s, :u, :d, 20, :paid) RETURNING *", p=pid, s=seq, u=uid,
                d=NOW.date() - timedelta(days=10 * seq), paid=NOW - timedelta(days=3) if seq <= paid else None)
        return events


@pytest.fixture(scope="module")
def cdc_database() -> Iterator[str]:
    dbs = Databases()
    try:
        yield dbs.create()
    finally:
        dbs.drop_all()


@pytest.fixture
def source(cdc_database: str) -> Iterator[SourceHistory]:
    conn = admin_connection(cdc_database)
    conn.run("SET TIME ZONE 'UTC'")
    yield SourceHistory(conn)
    conn.close()


@pytest.fixture
def cdc_env(cdc_database: str, redis_prefix: str) -> dict[str, str]:
    # The test's own reads of the online store wait for Redis (the read path's 10 ms would fail them on a busy machine).
    return {**base_env(cdc_database, redis_prefix), "FS_CDC_CHANGELOG_ENABLED": "false",
            "FS_REDIS_SOCKET_TIMEOUT_MS": "5000"}


@pytest.fixture
def ingestor(cdc_env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Ingestor:
    from feature_store.wiring import services

    use_env(cdc_env)
    return services().ingestor


class Writes:
    """The online store, its compare-and-set writes counted: asked for, and refused (a newer watermark was stored)."""

    def __init__(self, real: OnlineStore) -> None:
        self._real = real
        self._lock = threading.Lock()
        self.asked = 0
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_if_newer(self, entries: Sequence[Entry]) -> int:
        written = self._real.put_if_newer(entries)
        with self._lock:
            self.asked += len(entries)
            self.written += written
        return written

    @property
    def refused(self) -> int:
        with self._lock:
            return self.asked - self.written


class Gate:
    """The real source, with a gate between a batch's snapshot and its write.

    ``hold(ingestor, data)`` delivers one event on a thread of its own and returns once that batch
    has taken its snapshot: its write waits until ``release()``. ``meet(n)`` makes the next ``n``
    snapshots wait for each other, which only happens when n batches are in flight at once.
    """

    def __init__(self, real: Source) -> None:
        self._real = real
        self._lock = threading.Lock()
        self._hold = False
        self._taken = threading.Event()
        self._released = threading.Event()
        self._meeting: threading.Barrier | None = None
        self._meeting_left = 0
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []
        self.held_watermark = 0
        self.held_users: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        watermark, states = self._real.snapshot_states(user_ids)
        with self._lock:
            hold, self._hold = self._hold, False
            meeting = self._meeting if self._meeting_left > 0 else None
            if meeting is not None:
                self._meeting_left -= 1
        if meeting is not None:
            meeting.wait(WAIT_S)  # BrokenBarrierError: fewer batches were in flight at once
        if hold:
            self.held_watermark, self.held_users = watermark, list(user_ids)
            self._taken.set()
            if not self._released.wait(WAIT_S):
                raise AssertionError("the held batch was never released")
        return watermark, states

    def meet(self, batches: int) -> None:
        with self._lock:
            self._meeting, self._meeting_left = threading.Barrier(batches), batches

    def hold(self, ingestor: Ingestor, data: bytes) -> None:
        assert self._thread is None, "one held batch at a time"
        self._taken.clear()
        self._released.clear()
        with self._lock:
            self._hold = True

        def run() -> None:
            try:
                ingestor.handle(data, "held")
            except BaseException as exc:
                self._errors.append(exc)

        self._thread = threading.Thread(target=run)
        self._thread.start()
        if not self._taken.wait(WAIT_S):
            raise AssertionError(f"the held delivery took no snapshot within {WAIT_S}s: {self._errors}")

    @property
    def holding(self) -> bool:
        return self._thread is not None

    def release(self) -> None:
        """Let the held batch write, and wait until it has."""
        assert self._thread is not None
        self._released.set()
        self._thread.join(WAIT_S)
        alive, self._thread = self._thread.is_alive(), None
        assert not alive, "the held batch did not finish after its release"
        errors, self._errors = self._errors, []
        assert errors == [], errors

    def abandon(self) -> None:
        """Release a batch still held when a test stopped early (hypothesis ends examples mid-way)."""
        with self._lock:
            self._hold = False
        if self._thread is not None:
            self._released.set()
            self._thread.join(WAIT_S)
            self._thread, self._errors = None, []


@pytest.fixture
def gated(cdc_env: dict[str, str],
          use_env: Callable[[dict[str, str]], None]) -> Iterator[tuple[Ingestor, Gate, Writes]]:
    """An ingestor with two batches in flight, its source behind a Gate and its writes counted."""
    from feature_store.wiring import services

    use_env({**cdc_env, "FS_CDC_MAX_INFLIGHT": "2"})
    svc = services()
    gate, writes = Gate(svc.source), Writes(svc.online)
    cdc = svc.settings.cdc
    ingestor = Ingestor(writes, gate, None, cdc.decimal_handling_mode, cdc.max_batch, cdc.max_inflight)
    yield ingestor, gate, writes
    gate.abandon()  # a failed test must not leave a thread behind


def stale_writes(users: Sequence[str], watermark: int) -> int:
    """How many writes at ``watermark`` the compare-and-set must refuse: those of users with a newer one stored."""
    from feature_store.wiring import services

    return sum(1 for entry in services().online.get_many(list(users))
               if isinstance(entry, UserState | Tombstone) and entry.watermark > watermark)


_ids = itertools.count()


def fresh(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}x{threading.get_ident() % 1000:03d}"


def assert_converged(source: SourceHistory, users: set[str]) -> None:
    """Every user's online entry equals a recomputation from PostgreSQL (and the reference features)."""
    from feature_store.wiring import services

    svc = services()
    store = svc.online
    recomputed = svc.source.states_for(sorted(users))
    entries = dict(zip(sorted(users), store.get_many(sorted(users)), strict=True))
    at = NOW.timestamp() + 60
    for user in sorted(users):
        entry = entries[user]
        if user not in recomputed:
            assert isinstance(entry, Tombstone), f"{user} no longer exists but the online store holds {entry!r}"
            assert reference_features(source.conn, user, at) is None
            continue
        assert isinstance(entry, UserState), f"{user}: expected a state, found {entry!r}"
        assert replace(entry, computed_at=0, watermark=0) == replace(recomputed[user], computed_at=0, watermark=0)
        assert CREDIT_DECISION_V1.evaluate(entry, Instant(at)) == reference_features(source.conn, user, at)


def deliver(ingestor: Ingestor, events: list[bytes]) -> None:
    for i, data in enumerate(events):
        ingestor.handle(data, f"m{i}")


# --- convergence ---------------------------------------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("add_user"), st.integers(0, 2), st.integers(18, 90)),
    st.tuples(st.just("update_user"), st.integers(0, 2), st.integers(18, 90)),
    st.tuples(st.just("delete_user"), st.integers(0, 2)),
    st.tuples(st.just("add_order"), st.integers(0, 2), st.decimals("0", "500", places=2),
              st.sampled_from(["completed", "pending", "failed"]), st.integers(0, 9 * 86400)),
    st.tuples(st.just("move_order"), st.integers(0, 5), st.integers(0, 2)),
    st.tuples(st.just("set_order_status"), st.integers(0, 5), st.sampled_from(["completed", "refunded"])),
    st.tuples(st.just("delete_order"), st.integers(0, 5)),
    st.tuples(st.just("set_risk"), st.integers(0, 2), st.decimals("0", "1", places=3)),
    st.tuples(st.just("add_plan"), st.integers(0, 2), st.integers(0, 2)),
)


def apply_op(source: SourceHistory, op: tuple[Any, ...], users: list[str], orders: list[str]) -> list[bytes]:
    name, *args = op
    if name in ("add_user", "update_user", "delete_user", "set_risk"):
        return getattr(source, name)(users[args[0]], *args[1:])  # type: ignore[no-any-return]
    if name == "add_order":
        orders.append(fresh("t"))
        return source.add_order(orders[-1], users[args[0]], *args[1:])
    if name == "add_plan":
        return source.add_plan(fresh("p"), users[args[0]], args[1])
    if not orders:
        return []
    tid = orders[args[0] % len(orders)]
    if name == "move_order":
        return source.move_order(tid, users[args[1]])
    return getattr(source, name)(tid, *args[1:])  # type: ignore[no-any-return]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=12), schedule=st.data())
def test_any_interleaving_of_deliveries_converges_to_the_source(
        source: SourceHistory, gated: tuple[Ingestor, Gate, Writes], ops: list[tuple[Any, ...]],
        schedule: st.DataObject) -> None:
    ingestor, gate, writes = gated
    users = [fresh("u") for _ in range(3)]
    source.add_user(users[0], 40)  # never delivered: the first delivery must still get it right
    orders: list[str] = []
    produced: list[bytes] = []
    refused = expected = 0

    def release() -> None:
        """The held batch writes now: exactly the writes older than what is stored must be refused."""
        nonlocal refused, expected
        stale, before = stale_writes(gate.held_users, gate.held_watermark), writes.refused
        gate.release()
        refused, expected = refused + writes.refused - before, expected + stale

    try:
        for op in ops:
            produced += apply_op(source, op, users, orders)
            # One delivery may be held between its snapshot and its write while later commits are made
            # and delivered beside it (the second batch in flight); it writes when the schedule says.
            if gate.holding and schedule.draw(st.booleans(), label="release the held batch"):
                release()
            if produced and not gate.holding and schedule.draw(st.booleans(), label="hold a delivery"):
                gate.hold(ingestor, schedule.draw(st.sampled_from(produced), label="held event"))
            # Deliver some of what exists so far - old events, duplicates, in any order - between commits.
            now = schedule.draw(st.lists(st.sampled_from(produced), max_size=4) if produced else st.just([]))
            deliver(ingestor, now)
        # Finally every event arrives at least once more, shuffled, some twice; a batch still held
        # writes before or after all of them.
        if gate.holding and schedule.draw(st.booleans(), label="release before the last deliveries"):
            release()
        late = schedule.draw(st.permutations(produced)) + schedule.draw(st.lists(st.sampled_from(produced), max_size=3)
                                                                        if produced else st.just([]))
        deliver(ingestor, late)
        if gate.holding:
            release()
    finally:
        gate.abandon()  # hypothesis may end an example at any draw, a batch still held
    touched = {u for u in users if any(u.encode() in e for e in produced)}
    assert_converged(source, touched)
    assert refused == expected
    event(f"stale writes refused: {'some' if refused else 'none'}")


def test_a_stale_event_whose_write_lands_last_is_refused_and_does_not_roll_back(
        source: SourceHistory, gated: tuple[Ingestor, Gate, Writes]) -> None:
    ingestor, gate, writes = gated
    uid, tid = fresh("u"), fresh("t")
    created = source.add_user(uid, 30) + source.add_order(tid, uid, Decimal("10.00"), "completed", 60)
    gate.hold(ingestor, created[0])  # its snapshot: age 30, the order completed
    changed = source.update_user(uid, 31) + source.set_order_status(tid, "refunded")
    deliver(ingestor, changed)  # a newer snapshot, written while the old one waits
    assert writes.refused == 0

    gate.release()  # the old snapshot's write comes last

    assert writes.refused == 1  # one user: one key, shared by every feature set version
    assert_converged(source, {uid})
    deliver(ingestor, created)  # the old events redelivered last: recomputed, never rolled back
    assert_converged(source, {uid})


def test_deletes_leave_tombstones_and_moves_refresh_both_users(source: SourceHistory, ingestor: Ingestor) -> None:
    a, b, tid = fresh("u"), fresh("u"), fresh("t")
    deliver(ingestor, source.add_user(a, 30) + source.add_user(b, 40)
            + source.add_order(tid, a, Decimal("99.99"), "completed", 30))
    deliver(ingestor, source.move_order(tid, b))
    assert_converged(source, {a, b})
    from feature_store.wiring import services

    before_delete = services().online.get_many([b])[0]
    deliver(ingestor, source.delete_user(b))
    assert_converged(source, {b})
    entry = services().online.get_many([b])[0]
    assert isinstance(entry, Tombstone) and isinstance(before_delete, UserState)
    assert entry.watermark >= before_delete.watermark


def test_concurrent_deliveries_in_overlapping_batches_converge(
        source: SourceHistory, gated: tuple[Ingestor, Gate, Writes]) -> None:
    ingestor, gate, _ = gated
    users = [fresh("u") for _ in range(8)]
    events: list[bytes] = []
    for i, uid in enumerate(users):
        events += source.add_user(uid, 20 + i)
        events += source.add_order(fresh("t"), uid, Decimal(i), "completed", 100 * i)
    gate.meet(2)  # the first two batches wait for each other between snapshot and write
    errors: list[BaseException] = []

    def worker(chunk: list[bytes]) -> None:
        try:
            deliver(ingestor, chunk)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(events[i::4] * 2,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in threads), "a delivery never returned"
    assert errors == []  # a BrokenBarrierError here: the two batches never were in flight together
    assert_converged(source, set(users))
    assert ingestor.stats.snapshot()["applied"] == 2 * len(events)


def test_events_with_the_schema_part_apply_the_same(source: SourceHistory, ingestor: Ingestor) -> None:
    source.with_schema = True
    uid = fresh("u")
    deliver(ingestor, source.add_user(uid, 50) + source.set_risk(uid, Decimal("0.125")) + source.add_plan(fresh("p"),
                                                                                                         uid, 1))
    assert_converged(source, {uid})


# --- transient faults: raise (so Pub/Sub redelivers), and the retry completes ----------------------


@pytest.mark.parametrize("broken", ["redis", "postgres"])
def test_a_dependency_outage_raises_and_the_retry_applies(
        broken: str, source: SourceHistory, cdc_env: dict[str, str], use_env: Callable[[dict[str, str]], None],
        redis_client: Any) -> None:
    from feature_store.wiring import services

    uid = fresh("u")
    events = source.add_user(uid, 33)
    bad = dict(cdc_env)
    if broken == "redis":
        bad["FS_REDIS_URL"] = f"redis://127.0.0.1:{closed_port()}/0"
    else:
        bad["FS_POSTGRES_PORT"] = str(closed_port())
    use_env(bad)
    with pytest.raises(DependencyUnavailable) as raised:
        deliver(services().ingestor, events)
    assert raised.value.dependency == broken
    key = services().online.layout.user(uid)
    assert redis_client.get(key) is None  # nothing half-applied online
    use_env(cdc_env)  # the dependency is back: Pub/Sub redelivers the same message
    deliver(services().ingestor, events)
    assert_converged(source, {uid})
