"""The read path under outages, with wrk on cached users and a prober on uncached ones.

Rules checked with counts (docs/serving.md, "Degradation"): while Redis answers, a cached user gets
200 whatever PostgreSQL does, at concurrency 1, 10 and 50; nothing is ever a 500; a miss while
PostgreSQL is down is 503 ``dependency_unavailable``; the first misses after PostgreSQL is back are
answered (pooled connections are replaced, not handed out dead); Redis hung, killed or flushed while
PostgreSQL is up costs nothing but the cache.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from typing import Any

import pytest

from conftest import AUTH_HEADERS

from .conftest import Stack
from .load import Prober, get, phase, wrk

pytestmark = pytest.mark.faults

CACHED = 500  # users u000000001..u000000500 are cached before each phase
RESET_S = 5.0  # FS_SERVING_BREAKER_RESET_S's default: a breaker half-opens after this


def warm(stack: Stack) -> None:
    ids = [f"u{n:09d}" for n in range(1, CACHED + 1)]
    for first in range(0, len(ids), 100):
        request = urllib.request.Request(f"{stack.url('read_features_batch')}/api/v1/features/batch",
                                         data=json.dumps({"user_ids": ids[first:first + 100]}).encode(),
                                         headers={"Content-Type": "application/json", **AUTH_HEADERS})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["counts"]["ok"] == len(ids[first:first + 100])


def not_200(load: dict[str, Any]) -> dict[str, int]:
    """Every answer of a wrk run that was not a 200 (served degraded or not), with socket errors."""
    out = {k: v for k, v in load["statuses"].items() if k.split(":")[0] != "200"}
    out.update({f"socket:{k}": v for k, v in load["socket_errors"].items() if v})
    return out


def report(title: str, counts: dict[str, Any]) -> None:
    print(f"\n[faults] {title}: {json.dumps(counts, sort_keys=True)}", flush=True)


@pytest.mark.parametrize("concurrency", [1, 10, 50])
def test_cached_users_get_200_while_postgres_stops_and_restarts(stack: Stack, concurrency: int) -> None:
    warm(stack)
    first_miss = 100_000 + concurrency * 10_000  # ids no seeded user has: misses that stay misses
    marks: dict[str, float] = {}

    def stop() -> None:
        stack.pg.stop("fast")
        marks["down"] = time.monotonic()  # pg_ctlcluster returns once the server is down

    def start() -> None:
        marks["starting"] = time.monotonic()
        stack.pg.start()
        marks["ready"] = time.monotonic()

    with Prober(stack.url("read_features"), first_miss) as misses:
        load = phase(lambda: wrk(stack.url("read_features"), concurrency, 9, 1, CACHED),
                     [(1.5, stop), (5.5, start)])
    during = misses.counts(marks["down"], marks["starting"])
    report(f"PostgreSQL stopped 4 s, cached users at concurrency {concurrency}", load)
    report(f"PostgreSQL stopped 4 s, uncached users one at a time (all / while stopped) c={concurrency}",
           {"all": dict(misses.counts()), "while_stopped": dict(during)})

    assert load["requests"] > 0 and not_200(load) == {}, load
    assert not any(s.startswith("500") for s in misses.counts()), misses.counts()
    assert during and set(during) == {"503:dependency_unavailable"}, during

    # Back up: once the breakers may probe again, the first misses are answered from the source.
    time.sleep(RESET_S + 0.5)
    after = [get(f"{stack.url('read_features')}/api/v1/features/user/u{n:09d}")[0] for n in range(1001, 1009)]
    report(f"first 8 misses after the restart (c={concurrency})", {"statuses": after})
    assert after == ["200"] * 8


def test_redis_hung_killed_restarted_and_flushed_under_load(stack: Stack) -> None:
    warm(stack)
    client = stack.redis.client()

    def restart() -> None:
        stack.redis.start()

    load = phase(lambda: wrk(stack.url("read_features"), 10, 12, 1, CACHED), [
        (1.0, lambda: stack.redis.signal(signal.SIGSTOP)),  # hung: every read times out after 10 ms
        (3.5, lambda: stack.redis.signal(signal.SIGCONT)),
        (5.0, stack.redis.kill),  # gone: refused at once, every key lost
        (7.0, restart),
        (9.5, client.flushall),
    ])
    report("Redis hung 2.5 s, killed 2 s, restarted empty, flushed; PostgreSQL up (c=10)", load)
    assert load["requests"] > 0 and not_200(load) == {}, load


def test_redis_breaker_open_and_postgres_down_still_serve_the_cache(stack: Stack) -> None:
    warm(stack)

    load = phase(lambda: wrk(stack.url("read_features"), 10, 11, 1, CACHED), [
        # Hung 4 s: its breaker opens within at most 3 s of failures, even when every timeout is
        # noticed late because the machine is saturated (services/breaker.py), and stays open 5 s.
        (1.0, lambda: stack.redis.signal(signal.SIGSTOP)),
        (5.0, lambda: stack.redis.signal(signal.SIGCONT)),  # Redis answers again, its breaker still open
        # Half a second later (reads that saw Redis hung are over) PostgreSQL stops: cached users
        # must come from Redis regardless of its breaker.
        (5.5, lambda: stack.pg.stop("fast")),
        (8.5, stack.pg.start),
    ])
    report("Redis hung 4 s (its breaker opens), 0.5 s later PostgreSQL stopped 3 s (c=10)", load)
    # While Redis hung and PostgreSQL was up: 200 from the source. Once Redis answered again while
    # PostgreSQL was down: 200 from Redis, tried although its breaker was open. Never a 500.
    assert load["requests"] > 0 and not_200(load) == {}, load
