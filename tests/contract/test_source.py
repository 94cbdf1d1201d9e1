"""The source's contract, run against real PostgreSQL and against the in-memory twin alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from conftest import Databases, admin_connection, base_env, closed_port
from feature_store.errors import DependencyUnavailable
from feature_store.settings import Settings
from feature_store.stores.dialect import POSTGRESQL
from feature_store.stores.memory import MemorySource
from feature_store.stores.ports import Source
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.source import SourceStore


@dataclass
class Backend:
    source: Source
    add_user: Callable[[str, int], None]  # (user id, age)
    delete_user: Callable[[str], None]
    unreachable: Callable[[], Source]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    dbs = Databases()
    try:
        yield dbs.create()
    finally:
        dbs.drop_all()


@pytest.fixture(params=["postgres", "memory"])
def backend(request: pytest.FixtureRequest, database: str) -> Iterator[Backend]:
    if request.param == "memory":
        twin = MemorySource()

        def broken() -> Source:
            down = MemorySource()

            def fail(_: str) -> None:
                raise DependencyUnavailable("postgres", "OSError")

            down.fault = fail
            return down

        yield Backend(twin, lambda uid, age: twin.set(uid, age=age, verification_status="verified"),
                      lambda uid: twin.delete(uid), broken)
        return
    settings = Settings.from_env(base_env(database)).postgres
    pool = PostgresPool(settings)
    conn = admin_connection(database)
    conn.run("TRUNCATE users CASCADE")
    closed = PostgresPool(settings.model_copy(update={"port": closed_port(), "connect_timeout_s": 0.5}))
    try:
        yield Backend(
            SourceStore(pool, POSTGRESQL),
            lambda uid, age: conn.run("INSERT INTO users (user_id, age, signup_date, verification_status) "
                                      "VALUES (:u, :a, CURRENT_DATE, 'verified')", u=uid, a=age),
            lambda uid: conn.run("DELETE FROM users WHERE user_id = :u", u=uid),
            lambda: SourceStore(closed, POSTGRESQL))
    finally:
        conn.close()
        pool.close()


def test_users_that_do_not_exist_are_simply_missing_and_the_watermark_is_still_given(backend: Backend) -> None:
    mark, states = backend.source.snapshot_states(["nobody", "noone"])
    empty_mark, nothing = backend.source.snapshot_states([])

    assert states == {} and nothing == {}
    assert isinstance(mark, int) and mark >= 0 and empty_mark >= mark


def test_every_state_of_one_call_carries_its_watermark(backend: Backend) -> None:
    backend.add_user("a", 30)
    backend.add_user("b", 41)

    mark, states = backend.source.snapshot_states(["a", "b", "nobody", "a"])

    assert sorted(states) == ["a", "b"]
    assert {s.watermark for s in states.values()} == {mark}
    assert (states["a"].age, states["b"].age) == (30, 41)
    assert states["a"].verification_status == "verified" and states["a"].total_orders == 0


def test_a_change_moves_the_watermark_forward_and_is_in_the_next_snapshot(backend: Backend) -> None:
    backend.add_user("a", 30)
    before, _ = backend.source.snapshot_states(["a"])

    backend.delete_user("a")
    after_delete, gone = backend.source.snapshot_states(["a"])
    backend.add_user("a", 52)
    after_insert, back = backend.source.snapshot_states(["a"])

    assert before < after_delete < after_insert
    assert gone == {} and back["a"].age == 52


def test_an_unreachable_source_is_unavailable(backend: Backend) -> None:
    with pytest.raises(DependencyUnavailable) as down:
        backend.unreachable().snapshot_states(["a"])
    assert down.value.code == "dependency_unavailable" and down.value.dependency == "postgres"
