"""The user-state SQL plus the catalog agree with an independent recomputation from raw rows."""

from __future__ import annotations

import random
from typing import Any

from conftest import SEED_USERS, admin_connection, base_env
from feature_store.domain.catalog import CREDIT_DECISION_V1, Instant
from feature_store.domain.state import STATE_COLUMNS
from feature_store.domain.synthetic import user_id
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.source import SourceStore
from reference import reference_features


def test_sampled_users_match_the_reference(seeded_database: dict[str, Any]) -> None:
    name = seeded_database["database"]
    pool = PostgresPool(Settings.from_env(base_env(name)).postgres, generic_plans=True)
    source = SourceStore(pool, POSTGRESQL)
    sample = [user_id(n) for n in random.Random(3).sample(range(SEED_USERS), 150)]
    conn = admin_connection(name)
    try:
        states = source.states_for([*sample, "no-such-user"])
        assert set(states) == set(sample)
        for uid in sample:
            at = states[uid].computed_at + 1
            assert CREDIT_DECISION_V1.evaluate(states[uid], Instant(at)) == reference_features(conn, uid, at), uid
    finally:
        conn.close()
        pool.close()


def test_the_statement_produces_exactly_the_declared_columns(seeded_database: dict[str, Any]) -> None:
    pool = PostgresPool(Settings.from_env(base_env(seeded_database["database"])).postgres)
    try:
        columns = SourceStore(pool, POSTGRESQL).columns()
    finally:
        pool.close()
    assert tuple(columns) == STATE_COLUMNS  # sql/queries/user_state.sql against domain/state.py


def test_watermark_grows_with_commits(seeded_database: dict[str, Any]) -> None:
    name = seeded_database["database"]
    pool = PostgresPool(Settings.from_env(base_env(name)).postgres)
    source = SourceStore(pool, POSTGRESQL)
    conn = admin_connection(name)
    try:
        before = source.states_for([user_id(5)])[user_id(5)].watermark
        conn.run("UPDATE users SET updated_at = now() WHERE user_id = :u", u=user_id(6))
        after = source.states_for([user_id(5)])[user_id(5)].watermark
    finally:
        conn.close()
        pool.close()
    assert after > before
