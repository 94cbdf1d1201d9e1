"""Repair under a busy source: the verification's repair completes while the application keeps a writing
transaction open at every instant, and a write that commits during the repair still wins (real PostgreSQL
on both sides, tests/migration/conftest.py).

The replication here is the real one in this process: a test_decoding slot on the source read as
emulators/cdc_relay.py reads it, each change encoded as the Debezium event the relay publishes (its position
is the change's own LSN, ``source.lsn``) and handed to replicate_changes' Replicator. It delivers what has
committed whenever the verification waits for the replication (a recheck's wait, ``recheck_delay_s`` or
longer); shorter waits are the verification waiting for writers of the source, and deliver nothing.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import pg8000.native
import pytest

from conftest import admin_connection
from feature_store.domain.changes import TABLES
from feature_store.services.migration.verify import Verifier
from feature_store.stores.migration_tables import key_value

from .conftest import rows
from .events import columns
from .test_migration_backfill import assert_same, backfill_all, verify_all

from debezium_wire import debezium_event, decode_test_decoding  # isort: skip (emulators/, put on sys.path by .events)

DECODING = "'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1'"  # emulators/cdc_relay.py's


class SlotRelay:
    """The source's change stream, delivered on demand: every committed change, in commit order."""

    def __init__(self, database: str, replicator: Any) -> None:
        self.database, self.replicator = database, replicator
        self.slot = f"fsm_repair_{secrets.token_hex(4)}"
        self.conn = admin_connection(database)
        self.conn.run("SELECT pg_create_logical_replication_slot(:s, 'test_decoding')", s=self.slot)
        self.outcomes: list[tuple[str, tuple[Any, ...], int, str]] = []  # table, key, position, outcome
        self._lock = threading.Lock()
        self._columns: dict[str, dict[str, tuple[str, bool]]] = {}

    def drain(self) -> None:
        with self._lock:
            found = self.conn.run(f"SELECT lsn::text, xid::text, data FROM pg_logical_slot_get_changes("
                                  f"CAST(:s AS name), NULL, NULL, {DECODING})", s=self.slot)
            for txn in decode_test_decoding(found):
                for change in txn.changes:
                    if change.table not in TABLES:
                        continue
                    data = debezium_event(server="fs", db=self.database, table=change.table, op=change.op,
                                          lsn=change.lsn, commit_lsn=txn.commit_lsn, tx_id=txn.xid,
                                          ts_ms=txn.commit_ts_ms, before=change.before, after=change.after,
                                          columns=self._table_columns(change.table))
                    outcome = self.replicator.handle(data, str(change.lsn))
                    image = change.after if change.after is not None else change.before or {}
                    key = tuple(image.get(c) for c in TABLES[change.table].primary_key)
                    self.outcomes.append((change.table, key, change.lsn, outcome))

    def _table_columns(self, table: str) -> dict[str, tuple[str, bool]]:
        if table not in self._columns:
            self._columns[table] = columns(self.database, table)
        return self._columns[table]

    def lose(self) -> None:
        """Consume what committed so far without delivering it: changes the replication lost."""
        with self._lock:
            self.conn.run("SELECT count(*) FROM pg_logical_slot_get_changes(CAST(:s AS name), NULL, NULL)", s=self.slot)

    def outcome(self, table: str, key: tuple[Any, ...]) -> list[str]:
        return [o for t, k, _, o in self.outcomes if (t, k) == (table, key)]

    def close(self) -> None:
        try:
            self.conn.run("SELECT pg_drop_replication_slot(:s)", s=self.slot)
        finally:
            self.conn.close()


class BusyWriters:
    """The checkout service on the source: short transactions back to back on two connections, overlapping so
    that a writing transaction is open at every instant: each holds its write ``hold_s``, then commits only
    once the other connection has written in its next transaction."""

    def __init__(self, database: str, users: list[str], hold_s: float = 0.05) -> None:
        self.database, self.users, self.hold_s = database, users, hold_s
        self.commits = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._written = 0  # transactions open with a write
        self._handoff = threading.Condition()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        conn = admin_connection(self.database)
        try:
            n = index
            while not self._stop.is_set():
                conn.run("BEGIN")
                conn.run("UPDATE users SET age = age % 100 + 1 WHERE user_id = :u", u=self.users[n % len(self.users)])
                with self._handoff:
                    self._written += 1
                    self._handoff.notify_all()
                time.sleep(self.hold_s)
                with self._handoff:
                    self._handoff.wait_for(lambda: self._written > 1 or self._stop.is_set())
                    self._written -= 1
                conn.run("COMMIT")
                self.commits += 1
                n += 2
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)
            self._stop.set()
        finally:
            conn.close()

    def stop(self) -> int:
        self._stop.set()
        with self._handoff:
            self._handoff.notify_all()
        for thread in self._threads:
            thread.join(30)
        if self.errors:
            raise self.errors[0]
        return self.commits


class DuringRepair:
    """``statement`` in a transaction of the source that opens when the verification's repair starts (before
    its snapshot) and commits at the verification's next wait: a write that commits during the repair."""

    def __init__(self, database: str, statement: str) -> None:
        self.database, self.statement = database, statement
        self.conn: pg8000.native.Connection | None = None
        self.opened = self.committed = False

    def open(self, flushed: bool = True) -> None:
        """``flushed``: return once the WAL is flushed past the write (other transactions' commits flush it), so
        that the repair's watermark is above the write's position: the case a read of the sender must cover."""
        if not self.opened:
            self.opened = True
            self.conn = admin_connection(self.database)
            self.conn.run("BEGIN")
            self.conn.run(self.statement)
            written = self.conn.run("SELECT CAST(pg_current_wal_insert_lsn() AS TEXT)")[0][0]
            check = admin_connection(self.database)
            try:
                deadline = time.monotonic() + 30
                while flushed and not check.run("SELECT pg_current_wal_flush_lsn() >= CAST(:l AS pg_lsn)",
                                                l=written)[0][0]:
                    assert time.monotonic() < deadline, "the WAL was never flushed past the write"
                    time.sleep(0.01)
            finally:
                check.close()

    def commit(self) -> None:
        if self.conn is not None and not self.committed:
            self.committed = True
            self.conn.run("COMMIT")
            self.conn.close()

    def close(self) -> None:
        if self.conn is not None and not self.committed:
            self.conn.close()  # rolled back


@pytest.fixture
def relay(pair: dict[str, Any], migration: Any) -> Iterator[SlotRelay]:
    """The prepared and backfilled pair, with the source's change stream from here on."""
    migration.phases.prepare()
    backfill_all(migration.phases)
    slot = SlotRelay(pair["source"], migration.replicator)
    yield slot
    slot.close()


@pytest.fixture
def busy(pair: dict[str, Any]) -> Iterator[BusyWriters]:
    writers = BusyWriters(pair["source"], [f"u{n:09d}" for n in range(100, 140)])
    yield writers
    writers.stop()


def replicate_on_waits(phases: Any, relay: SlotRelay, during: DuringRepair) -> None:
    """The verification's waits: the write ``during`` the repair commits, and the replication delivers at a
    recheck's wait."""
    delay = phases.config.recheck_delay_s

    def waits(seconds: float) -> None:
        if during.opened:
            during.commit()
        if seconds >= delay:
            relay.drain()
        time.sleep(min(seconds, 0.02))

    phases._sleep = waits


def open_when_repair_starts(monkeypatch: pytest.MonkeyPatch, during: DuringRepair) -> None:
    repair = Verifier.repair

    def starting(self: Verifier, *args: Any, **kwargs: Any) -> int:
        during.open()
        return repair(self, *args, **kwargs)

    monkeypatch.setattr(Verifier, "repair", starting)


def test_a_repair_completes_under_writers_always_open_and_a_write_committed_during_it_wins(
        pair: dict[str, Any], migration: Any, relay: SlotRelay, busy: BusyWriters,
        monkeypatch: pytest.MonkeyPatch) -> None:
    phases = migration.phases
    source, target = pair["source"], pair["target"]
    rows(target, "UPDATE users SET age = 3 WHERE user_id = 'u000000005'")  # a change the replication lost
    during = DuringRepair(source, "UPDATE users SET age = 55 WHERE user_id = 'u000000005'")
    open_when_repair_starts(monkeypatch, during)
    replicate_on_waits(phases, relay, during)
    before = busy.commits

    try:
        checked = verify_all(phases, "run-busy")
    finally:
        during.close()
    written = busy.stop() - before
    relay.drain()

    assert written > 0 and during.committed
    assert checked["ok"], checked["different"]
    assert "users" in {r["table"] for r in checked["repaired"]}
    assert rows(target, "SELECT age FROM users WHERE user_id = 'u000000005'") == [[55]]
    # the write reached the target by the repair: its own change, older than the repair's position, came later
    assert relay.outcome("users", ("u000000005",)) == ["stale"]
    assert_same(pair)


def test_absent_keys_are_repaired_as_deletes_unless_a_write_inserting_one_commits_during_the_repair(
        pair: dict[str, Any], migration: Any, relay: SlotRelay, busy: BusyWriters,
        monkeypatch: pytest.MonkeyPatch) -> None:
    phases = migration.phases
    source, target = pair["source"], pair["target"]
    gone, back = rows(source, "SELECT user_id FROM risk_scores ORDER BY user_id LIMIT 2")
    rows(source, "DELETE FROM risk_scores WHERE user_id IN (:a, :b)", a=gone[0], b=back[0])
    relay.lose()  # two deletes the replication never delivers
    during = DuringRepair(source, f"INSERT INTO risk_scores (user_id, risk_score, payment_delays) "
                                  f"VALUES ('{back[0]}', 0.9, 1)")
    open_when_repair_starts(monkeypatch, during)
    replicate_on_waits(phases, relay, during)

    try:
        checked = verify_all(phases, "run-absent")
    finally:
        during.close()
    busy.stop()
    relay.drain()

    assert checked["ok"], checked["different"]
    assert "risk_scores" in {r["table"] for r in checked["repaired"]}
    assert rows(target, "SELECT count(*) FROM risk_scores WHERE user_id = :u", u=gone[0]) == [[0]]
    assert rows(target, "SELECT risk_score, payment_delays FROM risk_scores WHERE user_id = :u", u=back[0]
                ) == rows(source, "SELECT risk_score, payment_delays FROM risk_scores WHERE user_id = :u", u=back[0])
    assert relay.outcome("risk_scores", (back[0],)) == ["stale"]  # the insert's own change: older, came later
    assert_same(pair)


def test_a_writer_open_longer_than_the_repair_waits_postpones_it_and_its_change_still_lands(
        pair: dict[str, Any], migration: Any, relay: SlotRelay) -> None:
    phases = migration.phases
    source, target = pair["source"], pair["target"]
    rows(target, "UPDATE users SET age = 3 WHERE user_id = 'u000000006'")
    verifier = phases._verifier(strict=False)
    verifier.settle_wait_s = 0.3
    held = DuringRepair(source, "UPDATE users SET age = 66 WHERE user_id = 'u000000006'")
    held.open(flushed=False)  # no other writer here to flush it

    try:
        rewritten = verifier.repair(verifier.spec("users"), None, None, {key_value(["u000000006"])})
        unchanged = rows(target, "SELECT age FROM users WHERE user_id = 'u000000006'")
    finally:
        held.commit()
    relay.drain()

    assert rewritten == 0 and unchanged == [[3]]
    assert relay.outcome("users", ("u000000006",)) == ["applied"]
    assert rows(target, "SELECT age FROM users WHERE user_id = 'u000000006'") == [[66]]
