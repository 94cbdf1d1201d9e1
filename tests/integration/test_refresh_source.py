"""The bulk source against real PostgreSQL: values identical to the point-read path, boundaries, changed ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import SEED_USERS, Databases, admin_connection, base_env
from feature_store.domain.state import LAYOUT
from feature_store.domain.synthetic import user_id
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL, WATERMARK_HEX_DIGITS
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_bulk import BulkSource
from feature_store.stores.redis_online import encode
from feature_store.stores.source import SourceStore

_COMPUTED_AT = re.compile(rb"^\[3,[^,]+,")


def body(value: bytes) -> bytes:
    """A value without its watermark and with computed_at blanked: the two reads ran at different instants."""
    rest = value[WATERMARK_HEX_DIGITS:]
    if rest[0] == LAYOUT:  # binary: computed_at is the 8 bytes after the layout byte
        return rest[:1] + bytes(8) + rest[9:]
    return _COMPUTED_AT.sub(b"[3,0,", rest)


def pools(database: str) -> tuple[PostgresPool, BulkSource, SourceStore]:
    pool = PostgresPool(Settings.from_env(base_env(database)).postgres)
    return pool, BulkSource(pool, POSTGRESQL), SourceStore(pool, POSTGRESQL)


def test_every_seeded_user_gets_the_bytes_the_point_read_path_writes(seeded_database: dict[str, Any]) -> None:
    pool, bulk, source = pools(seeded_database["database"])
    try:
        vectors = bulk.vectors_in_range("", None)
        by_id = source.states_for([user_id(n) for n in range(SEED_USERS)])
        states = [by_id[u] for u in sorted(by_id)]
    finally:
        pool.close()
    assert [v.user_id for v in vectors] == [s.user_id for s in states] == [user_id(n) for n in range(SEED_USERS)]
    mismatched = [v.user_id for v, s in zip(vectors, states, strict=True) if body(v.value) != body(encode(s))]
    assert mismatched == []
    assert len({v.watermark for v in vectors}) == 1 and vectors[0].watermark > 0  # one snapshot per statement


def test_ranges_and_boundaries_cover_the_key_space_exactly_once(seeded_database: dict[str, Any]) -> None:
    pool, bulk, _ = pools(seeded_database["database"])
    try:
        assert bulk.count("", None) == SEED_USERS
        assert bulk.count(user_id(100), user_id(350)) == 250
        assert bulk.next_boundary("", 1000) == user_id(1000)
        assert bulk.next_boundary(user_id(2500), 1000) is None  # fewer than 1000 left
        assert bulk.next_boundary(user_id(100), 300, user_id(350)) is None
        seen, lo = [], ""
        while True:
            hi = bulk.next_boundary(lo, 700)
            seen += [v.user_id for v in bulk.vectors_in_range(lo, hi)]
            if hi is None:
                break
            lo = hi
    finally:
        pool.close()
    assert seen == [user_id(n) for n in range(SEED_USERS)]


def test_ids_that_do_not_exist_come_back_missing_with_the_snapshot_watermark(
        seeded_database: dict[str, Any]) -> None:
    pool, bulk, _ = pools(seeded_database["database"])
    try:
        batch = bulk.vectors_for([user_id(5), "nobody", user_id(5), user_id(9)])
        empty = bulk.vectors_for(["nobody", "noone"])
    finally:
        pool.close()
    assert [v.user_id for v in batch.vectors] == [user_id(5), user_id(9)]
    assert batch.missing == ["nobody"] and batch.watermark == batch.vectors[0].watermark
    assert empty.vectors == [] and empty.missing == ["nobody", "noone"] and empty.watermark > 0


def test_changed_since_finds_each_kind_of_change_once(databases: Databases) -> None:
    name = databases.create()
    conn = admin_connection(name)
    old = datetime.now(UTC) - timedelta(days=30)
    for uid in ("a", "b", "c", "d", "e", "f"):
        conn.run("INSERT INTO users (user_id, signup_date, created_at, updated_at) VALUES (:u, :d, :t, :t)",
                 u=uid, d=old.date(), t=old)
    conn.run("INSERT INTO risk_scores (user_id, risk_score, calculated_at) VALUES ('f', 0.5, :t)", t=old)
    conn.run("INSERT INTO installment_plans VALUES ('p1', 'd', 't0', 100, 4, 'active', :t, :t)", t=old)
    conn.run("INSERT INTO installments VALUES ('p1', 1, 'e', :d, 25, NULL)", d=old.date())
    since = datetime.now(UTC)
    conn.run("UPDATE users SET updated_at = now() WHERE user_id = 'a'")
    conn.run("INSERT INTO transactions VALUES ('t1', 'b', 10, 'USD', 'm1', 'books', 'completed', now()), "
             "('t2', 'b', 10, 'USD', 'm1', 'books', 'completed', now())")
    conn.run("UPDATE installment_plans SET updated_at = now() WHERE plan_id = 'p1'")
    conn.run("UPDATE installments SET paid_at = now() WHERE plan_id = 'p1'")
    conn.run("UPDATE risk_scores SET calculated_at = now() WHERE user_id = 'f'")
    conn.close()
    pool, bulk, _ = pools(name)
    try:
        with bulk.changed_since(since, "", 2) as pages:
            paged = list(pages)
        with bulk.changed_since(since, "b", 100) as pages:
            after_b = [u for page in pages for u in page]
        with bulk.changed_since(datetime.now(UTC) + timedelta(seconds=5), "", 100) as pages:
            nothing = list(pages)
        now, safe = bulk.safe_now()
    finally:
        pool.close()
    assert paged == [["a", "b"], ["d", "e"], ["f"]]  # c did not change
    assert after_b == ["d", "e", "f"]
    assert nothing == []
    assert safe <= now


def test_states_the_binary_body_cannot_hold_get_the_point_reads_bytes(databases: Databases) -> None:
    name = databases.create()
    conn = admin_connection(name)
    day = datetime.now(UTC).date()
    users = [("plain", "DE", "verified", "medium"), ("country", "XX", "verified", None),
             ("status", "DE", "suspended", None), ("bracket", None, "pending", "very high"),
             ("empty", None, "pending", None)]
    for uid, country, status, bracket in users:
        conn.run("INSERT INTO users (user_id, age, location_country, signup_date, verification_status, income_bracket)"
                 " VALUES (:u, 40, :c, :d, :s, :b)", u=uid, c=country, d=day, s=status, b=bracket)
    conn.run("INSERT INTO transactions VALUES ('t1', 'plain', 12.50, 'USD', 'm\u00e9', 'books', 'completed', now()), "
             "('t2', 'plain', 0.01, 'USD', 'm2', 'pets', 'completed', now()), "
             "('t3', 'plain', 3.00, 'USD', '', 'pets', 'pending', now() - interval '1 hour'), "
             "('t4', 'status', 99999999.99, 'USD', 'm3', 'books', 'completed', now())")
    conn.run("INSERT INTO risk_scores (user_id, risk_score, fraud_probability) VALUES ('plain', 0.078, 0)")
    conn.run("INSERT INTO installment_plans VALUES ('p1', 'plain', 't1', 100, 4, 'active', now(), now())")
    conn.run("INSERT INTO installments VALUES ('p1', 1, 'plain', :d, 25, NULL), ('p1', 2, 'plain', :d, 25.5, NULL),"
             " ('p1', 3, 'plain', :d, 10, now() + interval '40 days')", d=day)
    conn.close()
    pool, bulk, source = pools(name)
    try:
        vectors = bulk.vectors_in_range("", None)
        states = source.states_for([u[0] for u in users])
    finally:
        pool.close()
    got = {v.user_id: v.value for v in vectors}
    assert {u: body(got[u]) for u in states} == {u: body(encode(s)) for u, s in states.items()}
    forms = {u: got[u][WATERMARK_HEX_DIGITS:WATERMARK_HEX_DIGITS + 1] for u in got}
    # XX, suspended and "very high" are outside their vocabularies; 99,999,999.99 spent is past 32 bits of
    # cents. plain ties books and pets (outside the vocabulary) for its favourite: books, the first, is in it.
    binary = bytes([LAYOUT])
    assert forms == {"plain": binary, "country": b"[", "status": b"[", "bracket": b"[", "empty": binary}
