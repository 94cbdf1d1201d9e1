"""The local relay against real logical decoding: Debezium envelopes, at-least-once delivery, resume
after restart, partitions reported as their parent, and convergence when its events are applied.

Needs the server at wal_level = logical (emulators/stack.py and .ci/run arrange it). Every test
uses its own slot and drops it afterwards: an abandoned slot holds WAL forever.
"""

from __future__ import annotations

import itertools
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import Databases, admin_connection, base_env
from feature_store.domain.changes import parse_change
from feature_store.settings import Settings
from feature_store.stores.postgres import Connection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "emulators"))
from cdc_relay import Message, Relay
from debezium_wire import format_lsn, parse_lsn

NOW = datetime.now(UTC).replace(microsecond=0)


def require_logical_decoding() -> None:
    conn = admin_connection()
    try:
        level = conn.run("SELECT current_setting('wal_level')")[0][0]
    finally:
        conn.close()
    if level != "logical":
        pytest.fail(f"PostgreSQL runs with wal_level = {level}; CDC tests need logical: "
                    "ALTER SYSTEM SET wal_level = logical and restart it (.ci/run and `make up` do)")


@pytest.fixture(scope="module")
def relay_database() -> Iterator[str]:
    require_logical_decoding()
    dbs = Databases()
    try:
        yield dbs.create()
    finally:
        dbs.drop_all()


class Collector:
    """A sink that records what it is given and can be told to fail (a function answering 500)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.failing = False

    def __call__(self, messages: Sequence[Message]) -> None:
        if self.failing:
            raise InterruptedError("the push endpoint is down")
        self.messages.extend(messages)

    def changes(self) -> list[Any]:
        return [parse_change(m.data) for m in self.messages]


@pytest.fixture
def make_relay(relay_database: str) -> Iterator[Callable[..., Relay]]:
    """Relays on one fresh slot; the slot is dropped at the end whatever happened."""
    slot = f"fs_test_{secrets.token_hex(4)}"
    conns: list[Connection] = []

    def make(sink: Callable[[Sequence[Message]], None], plugin: str | None = None, **kw: Any) -> Relay:
        conn = Connection(connect(Settings.from_env(base_env(relay_database)).postgres))
        conns.append(conn)
        if plugin and not conn.run("SELECT 1 FROM pg_replication_slots WHERE slot_name = :s", s=slot):
            conn.run("SELECT pg_create_logical_replication_slot(:s, :p)", s=slot, p=plugin)
        return Relay(conn, slot, sink, **kw)

    yield make
    for conn in conns:
        conn.close()
    admin = admin_connection()
    try:
        admin.run("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = :s", s=slot)
    finally:
        admin.close()


@pytest.fixture
def sql(relay_database: str) -> Iterator[Callable[..., Any]]:
    conn = admin_connection(relay_database)
    yield conn.run
    conn.close()


def insert_user(sql: Callable[..., Any], uid: str) -> None:
    sql("INSERT INTO users (user_id, age, signup_date) VALUES (:u, 30, '2024-01-01')", u=uid)


@pytest.mark.parametrize("plugin", ["wal2json", "test_decoding"])
def test_row_changes_become_debezium_events(plugin: str, make_relay: Callable[..., Relay],
                                            sql: Callable[..., Any]) -> None:
    sink = Collector()
    relay = make_relay(sink, plugin=plugin, with_schema=(plugin == "test_decoding"))
    uid, other, tid = f"u{secrets.token_hex(4)}", f"u{secrets.token_hex(4)}", f"t{secrets.token_hex(4)}"
    insert_user(sql, uid)
    sql("INSERT INTO transactions (transaction_id, user_id, amount, merchant, category, status, created_at) "
        "VALUES (:t, :u, 12.50, 'm', 'books', 'completed', :c)", t=tid, u=uid, c=NOW - timedelta(days=40))
    sql("UPDATE transactions SET created_at = :c, user_id = :o WHERE transaction_id = :t",
        t=tid, o=other, c=NOW)  # moves the row to another monthly partition: a delete and an insert
    sql("UPDATE users SET age = 31 WHERE user_id = :u", u=uid)
    sql("DELETE FROM users WHERE user_id = :u", u=uid)
    assert relay.step() == 6
    changes = sink.changes()
    assert [(c.table, c.op) for c in changes] == [("users", "c"), ("transactions", "c"), ("transactions", "d"),
                                                  ("transactions", "c"), ("users", "u"), ("users", "d")]
    assert changes[1].row["amount"] == Decimal("12.50")
    assert changes[3].row["user_id"] == other and changes[2].row["user_id"] == uid
    assert changes[4].before["age"] == 30 and changes[4].after["age"] == 31
    assert changes[5].before["user_id"] == uid and changes[5].after is None
    assert [c.lsn for c in changes] == sorted(c.lsn for c in changes)
    assert len({m.message_id for m in sink.messages}) == 6
    envelope = json.loads(sink.messages[0].data)
    payload = envelope["payload"] if plugin == "test_decoding" else envelope
    assert payload["source"]["connector"] == "postgresql" and payload["source"]["table"] == "users"
    commit_lsn, lsn = json.loads(payload["source"]["sequence"])
    assert int(commit_lsn) > int(lsn) == payload["source"]["lsn"]
    assert relay.step() == 0  # confirmed: nothing is delivered twice in normal operation


def test_delivery_is_at_least_once_and_resumes_after_restart(make_relay: Callable[..., Relay],
                                                             sql: Callable[..., Any]) -> None:
    sink = Collector()
    relay = make_relay(sink)
    first, second = f"u{secrets.token_hex(4)}", f"u{secrets.token_hex(4)}"
    insert_user(sql, first)
    sink.failing = True  # the function is down: nothing may be confirmed
    with pytest.raises(InterruptedError):
        relay.step()
    sink.failing = False
    assert relay.step() == 1
    insert_user(sql, second)
    relay.conn.close()  # the relay dies before reading the second change
    restarted = make_relay(sink)
    assert restarted.step() == 1
    assert [c.row["user_id"] for c in sink.changes()] == [first, second]


def test_the_slot_moves_past_other_databases_wal(make_relay: Callable[..., Relay], sql: Callable[..., Any]) -> None:
    relay = make_relay(Collector())
    other_db = Databases()
    try:
        conn = admin_connection(other_db.create(migrated=False))
        conn.run("CREATE TABLE noise AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 2000) g")
        conn.close()
        before = relay.conn.run("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :s",
                                s=relay.slot)[0][0]
        relay.step()  # nothing of ours: a heartbeat is written
        relay.step()  # the heartbeat is confirmed
        after = relay.conn.run("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = :s",
                               s=relay.slot)[0][0]
    finally:
        other_db.drop_all()
    assert parse_lsn(after) - parse_lsn(before) > 64 * 1024, (format_lsn(parse_lsn(before)), after)


def test_a_lost_connection_is_reconnected_and_the_delivered_tail_not_sent_again(
        relay_database: str, make_relay: Callable[..., Relay], sql: Callable[..., Any]) -> None:
    import threading

    from cdc_relay import run

    users = [f"u{secrets.token_hex(4)}" for _ in range(3)]
    relays: list[Relay] = []
    stopping = threading.Event()

    def deliver(messages: Sequence[Message]) -> None:
        sink(messages)
        if len(relays) == 1:  # the server drops the session after the push was acknowledged
            admin = admin_connection()
            admin.run("SELECT pg_terminate_backend(:p, 5000)", p=relays[0].conn.run("SELECT pg_backend_pid()")[0][0])
            admin.close()

    def open_relay(delivered_upto: int) -> Relay:
        relay = make_relay(deliver, delivered_upto=delivered_upto)
        relays.append(relay)
        return relay

    def step_until_done() -> None:
        run(open_relay, stopping, 0.01)

    sink = Collector()
    make_relay(sink)  # creates the slot before the commits
    for uid in users:
        insert_user(sql, uid)
    worker = threading.Thread(target=step_until_done)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (len(relays) >= 2 and relays[-1].skipped_redelivery):
            time.sleep(0.05)
    finally:
        stopping.set()
        worker.join(10)
    assert [c.row["user_id"] for c in sink.changes()] == users  # each once, in commit order
    assert len(relays) >= 2 and relays[-1].skipped_redelivery == 3
    confirmed = admin_connection().run("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                       "WHERE slot_name = :s", s=relays[-1].slot)[0][0]
    assert parse_lsn(confirmed) >= relays[-1].delivered_upto


def test_an_idle_relay_does_not_decode_when_no_wal_was_written(make_relay: Callable[..., Relay]) -> None:
    peeks: list[int] = []

    class Counting(Relay):
        def _peek(self, upto: int) -> list[list[Any]]:
            peeks.append(upto)
            return super()._peek(upto)

    relay = make_relay(Collector())
    counting = Counting(relay.conn, relay.slot, Collector(), clock=lambda: 0.0)  # no idle backoff
    for _ in range(20):
        counting.step()
    # A peek happens only when the server flushed WAL since the last one found the slot empty
    # (on a shared server other sessions may write some meanwhile): never twice over the same WAL.
    assert peeks and all(later > earlier for earlier, later in itertools.pairwise(peeks))
