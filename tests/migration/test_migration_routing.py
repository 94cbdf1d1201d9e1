"""The routing source and the shadow reader over in-memory sources (the real ones: test_migration_shift.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from feature_store.domain.migration_hash import to_target
from feature_store.domain.state import UserState
from feature_store.errors import DependencyUnavailable
from feature_store.services.migration.guard import ShadowReader
from feature_store.stores.migration_routing import Route
from feature_store.stores.migration_source import RoutingSource, split

USERS = [f"u{n:09d}" for n in range(200)]


class FakeSource:
    """States of fixed users at a fixed watermark; counts what it was asked."""

    def __init__(self, watermark: int, age: int, fail: bool = False) -> None:
        self.watermark, self.age, self.fail = watermark, age, fail
        self.asked: list[str] = []

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        self.asked += user_ids
        if self.fail:
            raise DependencyUnavailable("postgres", "target down")
        return self.watermark, {u: UserState(u, self.watermark, 1.0e9, age=self.age) for u in user_ids}


class FixedRoute:
    def __init__(self, route: Route) -> None:
        self.current = route

    def route(self) -> Route:
        return self.current


class Observer:
    def __init__(self) -> None:
        self.reads: list[tuple[int, bool]] = []
        self.offered: list[list[str]] = []

    def target_read(self, users: int, seconds: float, failed: bool) -> None:
        self.reads.append((users, failed))

    def offer(self, user_ids: Sequence[str]) -> None:
        self.offered.append(list(user_ids))


def test_at_zero_percent_the_target_is_never_asked() -> None:
    source, target = FakeSource(100, 30), FakeSource(10**20, 40)
    routed = RoutingSource(source, target, FixedRoute(Route()))

    mark, states = routed.snapshot_states(USERS)

    assert mark == 100 and len(states) == len(USERS) and not target.asked


def test_users_under_the_percentage_are_read_from_the_target_with_its_own_watermark() -> None:
    source, target = FakeSource(100, 30), FakeSource(10**20, 40)
    observer = Observer()
    routed = RoutingSource(source, target, FixedRoute(Route(percent=50)), observer)

    mark, states = routed.snapshot_states(USERS)

    moved = {u for u in USERS if to_target(u, 50)}
    assert set(target.asked) == moved and set(source.asked) == set(USERS) - moved
    assert 60 < len(moved) < 140
    assert all(states[u].age == 40 and states[u].watermark == 10**20 for u in moved)
    assert all(states[u].age == 30 and states[u].watermark == 100 for u in set(USERS) - moved)
    assert mark == 10**20  # a deleted user's tombstone carries the larger watermark
    assert observer.reads == [(len(moved), False)] and observer.offered == [USERS]


def test_a_failing_target_is_answered_from_the_source_and_counted() -> None:
    source, target = FakeSource(100, 30), FakeSource(10**20, 40, fail=True)
    observer = Observer()
    routed = RoutingSource(source, target, FixedRoute(Route(percent=100)), observer)

    mark, states = routed.snapshot_states(USERS[:10])

    assert mark == 100 and {s.age for s in states.values()} == {30} and len(states) == 10
    assert observer.reads == [(10, True)]


def test_after_the_cutover_every_read_goes_to_the_target() -> None:
    assert split(USERS, Route(percent=100, truth="target")) == ([], USERS)
    assert split(USERS, Route(percent=0)) == (USERS, [])


class Guard:
    def __init__(self) -> None:
        self.mismatched: list[str] = []

    def mismatch(self, users: Sequence[str]) -> None:
        self.mismatched += users


def test_a_difference_that_the_replication_closes_is_not_a_mismatch() -> None:
    source, target = FakeSource(1, 30), FakeSource(2, 31)

    def replication_catches_up(_: float) -> None:
        target.age = 30

    shadow = ShadowReader(source, target, Guard(), 1.0, 0.1, 3, sleep=replication_catches_up)  # type: ignore[arg-type]

    assert shadow.compare(USERS[:5]) == []
    assert shadow.compared == 5 and shadow.mismatched == 0


def test_a_difference_that_persists_is_a_mismatch_of_those_users() -> None:
    source, target = FakeSource(1, 30), FakeSource(2, 30)
    original = target.snapshot_states

    def one_differs(ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        mark, states = original(ids)
        if USERS[3] in states:
            states[USERS[3]] = replace(states[USERS[3]], age=99)
        return mark, states

    target.snapshot_states = one_differs  # type: ignore[method-assign]
    slept: list[float] = []
    shadow = ShadowReader(source, target, Guard(), 1.0, 0.1, 2, sleep=slept.append)  # type: ignore[arg-type]

    assert shadow.compare(USERS[:5]) == [USERS[3]]
    assert slept == [0.1, 0.1]


def test_only_the_sample_is_shadowed_and_off_the_callers_thread() -> None:
    never = ShadowReader(FakeSource(1, 1), FakeSource(1, 1), Guard(), 0.0, 0, 0, rng=lambda: 0.5)  # type: ignore[arg-type]
    always = ShadowReader(FakeSource(1, 1), FakeSource(1, 1), Guard(), 1.0, 0, 0, rng=lambda: 0.5)  # type: ignore[arg-type]

    never.offer(USERS[:3])
    always.offer(USERS[:3])

    deadline = time.monotonic() + 10
    while always.compared < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert always.compared == 3 and always._worker is not None
    assert never._worker is None and never._queue.empty() and never.compared == 0
