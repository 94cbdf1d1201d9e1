"""The reader over the in-memory twins of its ports: hits, misses, write-back, degraded answers, undecodable values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from feature_store.domain.catalog import CREDIT_DECISION_V1
from feature_store.domain.state import UserState
from feature_store.errors import DependencyTimeout, DependencyUnavailable
from feature_store.services.breaker import CircuitBreaker
from feature_store.services.reader import Reader
from feature_store.stores.memory import MemoryOnlineStore, MemorySource
from feature_store.stores.ports import Tombstone

NOW = 1_800_000_000.0
Twins = tuple[MemoryOnlineStore, MemorySource, Reader]


def raise_(error: Exception) -> Callable[[str], None]:
    def hook(_: str) -> None:
        raise error

    return hook


@pytest.fixture
def twins() -> Twins:
    online, source = MemoryOnlineStore(), MemorySource(clock=lambda: NOW - 60)
    reader = Reader(online, source, CircuitBreaker("redis", 5, 5), CircuitBreaker("postgres", 5, 5),
                    clock=lambda: NOW)
    source.set("a", age=30, recent_orders=((NOW - 600, 10.0, "m1"),))
    source.set("b", age=41)
    return online, source, reader


def test_a_miss_is_computed_from_the_source_and_written_back_then_hits(twins: Twins) -> None:
    _online, source, reader = twins

    first = reader.read(CREDIT_DECISION_V1, ["a", "nobody"])
    second = reader.read(CREDIT_DECISION_V1, ["a"])

    assert [(r.status, r.cache_hit) for r in first.results] == [("ok", False), ("unknown_user", False)]
    assert (second.results[0].status, second.results[0].cache_hit) == ("ok", True)
    assert second.results[0].features == first.results[0].features
    assert second.results[0].features["velocity"]["orders_1h"] == 1
    assert source.reads == 1 and not first.degraded
    assert reader.counter.drain() == {("credit_decision", 1): (1, 2, 0)}  # a and nobody missed, then a hit


def test_a_cached_tombstone_answers_unknown_user_without_the_source(twins: Twins) -> None:
    online, source, reader = twins
    online.put_if_newer([Tombstone("a", 2**70)])

    result = reader.read(CREDIT_DECISION_V1, ["a"]).results[0]

    assert (result.status, result.cache_hit, source.reads) == ("unknown_user", True, 0)


def test_an_online_store_timeout_degrades_to_the_source_without_writing_back(twins: Twins) -> None:
    online, _source, reader = twins
    online.put_if_newer([UserState("a", 1, NOW - 100, age=99)])
    online.fault = raise_(DependencyTimeout("redis", "TimeoutError"))

    outcome = reader.read(CREDIT_DECISION_V1, ["a"])

    assert outcome.degraded_reason == "redis_timeout"
    assert outcome.results[0].status == "ok" and outcome.results[0].features["demographics"]["age"] == 30
    online.fault = lambda _: None
    assert online.get_many(["a"])[0] == UserState("a", 1, NOW - 100, age=99)  # nothing written while degraded


def test_the_source_down_fails_only_the_misses(twins: Twins) -> None:
    _online, source, reader = twins
    reader.read(CREDIT_DECISION_V1, ["a"])  # cached
    source.fault = raise_(DependencyUnavailable("postgres", "OSError"))

    outcome = reader.read(CREDIT_DECISION_V1, ["a", "b"])

    assert [(r.status, r.cache_hit) for r in outcome.results] == [("ok", True), ("unavailable", False)]
    assert not outcome.degraded


def test_an_undecodable_value_is_recomputed_put_in_its_place_and_counted(twins: Twins) -> None:
    online, _source, reader = twins
    online.put_raw("a", b"ffffffffffffffffffffffff[1,[\"old layout\"]]")

    first = reader.read(CREDIT_DECISION_V1, ["a"]).results[0]
    second = reader.read(CREDIT_DECISION_V1, ["a"]).results[0]

    assert (first.status, first.cache_hit, second.cache_hit) == ("ok", False, True)
    assert reader.counter.drain() == {("credit_decision", 1): (1, 1, 1)}
