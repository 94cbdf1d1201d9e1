"""refresh_cache's input rules and the pure pieces of a refresh run (no I/O)."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from feature_store.domain.state import UserState
from feature_store.errors import BatchTooLarge, InvalidBody, InvalidParameter, InvalidUserId
from feature_store.services.refresh_pipeline import Budget, Tracker, pipelined
from feature_store.stores.postgres_bulk import state_of, value_of
from feature_store.stores.redis_online import encode
from feature_store.transports.refresh_api import (
    FullBody,
    IncrementalBody,
    InvalidateBody,
    UsersBody,
    check_user_ids,
    parse,
    parse_since,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- bodies -------------------------------------------------------------------------------------


def test_each_mode_parses_into_its_own_model() -> None:
    assert isinstance(parse({"mode": "full", "shards": 4, "run_id": "20261123T120000Z-abc123"}), FullBody)
    assert isinstance(parse({"mode": "incremental", "since": "2026-11-23T12:00:00Z"}), IncrementalBody)
    assert isinstance(parse({"mode": "users", "user_ids": ["u1"]}), UsersBody)
    assert isinstance(parse({"mode": "invalidate", "version": 2, "cursor": 17}), InvalidateBody)
    assert parse({"mode": "stats"}).mode == "stats"


@pytest.mark.parametrize("body", [{"mode": "warm"}, {"mode": 3}, {"mode": "FULL"}])
def test_an_unknown_mode_is_refused_with_its_own_code(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse(body)
    assert caught.value.code == "unknown_mode" and caught.value.status == 400
    assert "incremental" in caught.value.message  # names the modes that exist


@pytest.mark.parametrize("body", [
    [], "full", {}, {"mode": "users"}, {"mode": "users", "user_ids": "u1"}, {"mode": "users", "user_ids": []},
    {"mode": "full", "shards": 0}, {"mode": "full", "run_id": "../x"}, {"mode": "full", "colour": "red"},
    {"mode": "switch", "version": "2"}, {"mode": "full", "max_chunks": 0},
])
def test_malformed_bodies_are_invalid_body(body: Any) -> None:
    with pytest.raises(InvalidBody) as caught:
        parse(body)
    assert caught.value.code == "invalid_body" and caught.value.status == 400


def test_user_lists_are_checked_id_by_id_and_bounded() -> None:
    assert check_user_ids(["u000000001", "alice@example"], 10) == ["u000000001", "alice@example"]
    with pytest.raises(InvalidUserId) as caught:
        check_user_ids(["u1", "robert'); DROP TABLE users;--"], 10)
    assert "user_ids[1]" in caught.value.message
    with pytest.raises(InvalidUserId):
        check_user_ids(["u1", 7], 10)
    with pytest.raises(BatchTooLarge):
        check_user_ids([f"u{i}" for i in range(11)], 10)


# --- since --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-11-23T12:00:00Z", "2026-11-23T12:00:00+00:00", "2026-11-23T13:00:00+01:00",
                                  "2026-11-23T12:00:00", " 2026-11-23T12:00:00Z "])
def test_since_is_an_iso_instant_in_utc(text: str) -> None:
    assert parse_since(text) == datetime(2026, 11, 23, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "", "0/16B374D8", "2026-13-01T00:00:00Z"])
def test_a_malformed_since_is_invalid_watermark(text: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse_since(text)
    assert caught.value.code == "invalid_watermark"


# --- canonical values ---------------------------------------------------------------------------


def test_postgres_json_becomes_exactly_the_cached_state() -> None:
    # As json_build_array writes it: spaces, numerics with trailing zeros, integral sums without ".0",
    # NULL for an empty event list.
    pg = ('[3, 1795447153.551749, 18, "DE", "verified", "medium", 20672, 0, 0, null, null, null, '
          '0.419, 0.000, 0, 0.786, null, 0, 0, 0, null, null]')
    assert value_of("u1", 7, pg) == encode(UserState(
        "u1", 7, 1795447153.551749, 18, "DE", "verified", "medium", 20672, 0, 0.0, None, None, (), 0.419, 0.0, 0,
        0.786, None, 0, 0, 0, (), ()))
    pg = ('[3, 1795447153, 40, "US", null, null, null, 5, 1640.75, 1794790737.000000, "books", '
          '[[1795400000.000000, 12.50, "m00001"]], null, null, null, null, null, '
          '1, 4, 1, [1790000000.5], [[20700, 25.00]]]')
    state = state_of("u1", 7, json.loads(pg))
    assert state.computed_at == 1795447153.0 and isinstance(state.computed_at, float)
    assert (state.total_orders, state.total_spent, state.last_order_at, state.favorite_category) == (
        5, 1640.75, 1794790737.0, "books")
    assert state.recent_orders == ((1795400000.0, 12.5, "m00001"),) and isinstance(state.recent_orders[0][0], float)
    assert (state.open_plans, state.paid_on_time, state.paid_late, state.late_paid_at, state.unpaid) == (
        1, 4, 1, (1790000000.5,), ((20700, 25.0),))
    assert isinstance(state.unpaid[0][1], float)
    assert value_of("u1", 7, pg) == encode(state)


# --- budget, progress, pipelining ---------------------------------------------------------------


def test_budget_by_chunks_and_by_time() -> None:
    clock = Clock()
    by_chunks = Budget(None, 2, clock)
    assert [by_chunks.take() for _ in range(3)] == [True, True, False]
    by_time = Budget(10.0, None, clock)
    assert by_time.take()
    clock.now += 10.0
    assert not by_time.take() and by_time.exhausted()


def test_tracker_rate_and_eta_count_this_invocation_only() -> None:
    clock = Clock()
    tracker = Tracker({"mode": "full"}, total=1000, done=400, every_s=60, clock=clock)
    clock.now += 2.0
    tracker.advance(200)
    assert tracker.snapshot() == {"done": 600, "total": 1000, "rate_per_s": 100.0, "eta_s": 4.0, "elapsed_s": 2.0}


def test_pipelined_keeps_submission_order_and_bounds_work_ahead() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def job(n: int) -> int:
        with lock:
            started.append(n)
        time.sleep(0.002 * (5 - n % 5))  # later jobs finish first
        return n * n

    seen = []
    for key, value in pipelined(((n, lambda n=n: job(n)) for n in range(20)), workers=3):  # type: ignore[misc]
        seen.append((key, value))
        assert len(started) <= key + 1 + 4  # never more than workers + 1 ahead of the consumer
    assert seen == [(n, n * n) for n in range(20)]


def test_pipelined_stops_taking_jobs_when_the_source_stops() -> None:
    budget = Budget(None, 3)
    taken = []

    def jobs() -> Any:
        n = 0
        while budget.take():
            taken.append(n)
            yield n, (lambda n=n: n)
            n += 1

    assert [k for k, _ in pipelined(jobs(), workers=2)] == [0, 1, 2]
    assert taken == [0, 1, 2]
