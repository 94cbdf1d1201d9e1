"""The online store's contract, run against real Redis and against the in-memory twin alike."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from conftest import REDIS_URL, closed_port
from feature_store.domain.access import Rate
from feature_store.domain.state import UserState
from feature_store.errors import DependencyTimeout, DependencyUnavailable
from feature_store.stores.memory import MemoryOnlineStore
from feature_store.stores.ports import Admission, Cached, OnlineStore, Tombstone, Undecodable
from feature_store.stores.redis_online import KeyLayout, RedisOnlineStore
from feature_store.stores.redis_online_async import AsyncRedisReads

T = TypeVar("T")

GARBAGE = b"ffffffffffffffffffffffff[not a state"


@dataclass
class Backend:
    store: OnlineStore
    put_raw: Callable[[str, bytes], None]
    unreachable: Callable[[], OnlineStore]  # the same store with its server gone
    silent: Callable[[], OnlineStore]  # the same store with a server that never answers


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def _failing_twin(error: Exception) -> MemoryOnlineStore:
    twin = MemoryOnlineStore()

    def fail(_: str) -> None:
        raise error

    twin.fault = fail
    return twin


class AwaitedReads:
    """A RedisOnlineStore whose reads go through the async serving path's store (AsyncRedisReads), each on an
    event loop of its own; writes stay the threaded store's, as they do in the async read functions."""

    def __init__(self, store: RedisOnlineStore, reads: AsyncRedisReads) -> None:
        self.store, self.reads = store, reads

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def get_many(self, user_ids: Sequence[str], wait_s: float | None = None) -> list[Cached | None]:
        if wait_s is not None:  # the last resort is the threaded store's (the reader runs it on its pool)
            return self.store.get_many(user_ids, wait_s)
        return asyncio.run(self.reads.get_many(user_ids))

    def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                         cost: int) -> tuple[Admission, list[Cached | None]]:
        return asyncio.run(self.reads.get_many_limited(user_ids, client_id, rate, cost))


@pytest.fixture(params=["redis", "redis_async", "memory"])
def backend(request: pytest.FixtureRequest, redis_prefix: str, redis_client: redis.Redis,
            silent_server: int) -> Backend:
    if request.param == "memory":
        twin = MemoryOnlineStore()
        return Backend(twin, twin.put_raw,
                       lambda: _failing_twin(DependencyUnavailable("redis", "ConnectionError")),
                       lambda: _failing_twin(DependencyTimeout("redis", "TimeoutError")))
    layout = KeyLayout(redis_prefix)

    def store_at(url: str) -> OnlineStore:
        client = redis.Redis.from_url(url, socket_timeout=0.05, socket_connect_timeout=0.2)
        store = RedisOnlineStore(client, layout, 3600, 600)
        if request.param == "redis_async":
            return AwaitedReads(store, AsyncRedisReads(url, layout, 0.05, 0.2, 8))  # type: ignore[return-value]
        return store

    return Backend(store_at(REDIS_URL), lambda uid, raw: redis_client.set(layout.user(uid), raw),
                   lambda: store_at(f"redis://127.0.0.1:{closed_port()}/0"),
                   lambda: store_at(f"redis://127.0.0.1:{silent_server}/0"))


def state(user_id: str, watermark: int, age: int = 30) -> UserState:
    return UserState(user_id, watermark, 1.5, age=age, recent_orders=((1.0, 9.99, "m1"),))


def test_reads_answer_in_the_order_asked_with_none_for_nothing_cached(backend: Backend) -> None:
    store = backend.store
    assert store.put_if_newer([state("a", 10), Tombstone("b", 11)]) == 2

    assert store.get_many(["b", "nobody", "a", "a"]) == [Tombstone("b", 11), None, state("a", 10), state("a", 10)]
    assert store.get_many([]) == []


def test_a_write_lands_only_when_its_watermark_is_at_least_the_stored_one(backend: Backend) -> None:
    store = backend.store
    assert store.put_if_newer([state("a", 200, age=31)]) == 1
    assert store.put_if_newer([state("a", 100, age=30)]) == 0
    assert store.get_many(["a"]) == [state("a", 200, age=31)]
    assert store.put_if_newer([state("a", 200, age=32)]) == 1  # equal watermark: the later write wins
    assert store.put_if_newer([Tombstone("a", 150)]) == 0
    assert store.put_if_newer([Tombstone("a", 250)]) == 1
    assert store.get_many(["a"]) == [Tombstone("a", 250)]
    assert store.put_if_newer([state("a", 2**80)]) == 1  # 96-bit watermarks compare as numbers


def test_unreadable_values_come_back_undecodable_and_are_discarded_only_while_unchanged(backend: Backend) -> None:
    store = backend.store
    backend.put_raw("a", GARBAGE)
    backend.put_raw("b", GARBAGE)

    found = store.get_many(["a", "b"])

    assert found == [Undecodable("a", GARBAGE), Undecodable("b", GARBAGE)]
    assert store.put_if_newer([state("b", 5)]) == 0  # its watermark prefix wins the compare-and-set...
    backend.put_raw("b", b"0" * 24 + b"-")  # ...until someone else replaces it
    assert store.discard([u for u in found if isinstance(u, Undecodable)]) == 1  # only "a" was unchanged
    assert store.put_if_newer([state("a", 5)]) == 1
    assert store.get_many(["a", "b"]) == [state("a", 5), Tombstone("b", 0)]


def test_delete_many_counts_what_existed(backend: Backend) -> None:
    store = backend.store
    store.put_if_newer([state("a", 1), state("b", 1)])

    assert store.delete_many(["a", "nobody", "a"]) == 1
    assert store.get_many(["a", "b"]) == [None, state("b", 1)]
    assert store.delete_many([]) == 0


def test_an_unreachable_server_is_unavailable_and_a_silent_one_times_out(backend: Backend) -> None:
    for call in (lambda s: s.get_many(["a"]), lambda s: s.put_if_newer([state("a", 1)]),
                 lambda s: s.delete_many(["a"])):
        with pytest.raises(DependencyUnavailable) as down:
            call(backend.unreachable())
        assert not isinstance(down.value, DependencyTimeout) and down.value.code == "dependency_unavailable"
        with pytest.raises(DependencyTimeout) as slow:
            call(backend.silent())
        assert slow.value.code == "dependency_unavailable" and slow.value.status == 503


def test_the_limiter_admits_its_burst_refuses_a_straddling_batch_whole_and_reads_in_the_same_call(
        backend: Backend) -> None:
    store = backend.store
    store.put_if_newer([state("a", 10)])
    slow = Rate(per_s=0.1, burst=5)  # one unit per 10 s: nothing refills during the test

    first, entries = store.get_many_limited(["a", "b", "c"], "client-1", slow, 3)
    straddling, again = store.get_many_limited(["d", "e", "f"], "client-1", slow, 3)  # 3 + 3 > 5
    rest, _ = store.get_many_limited(["g", "h"], "client-1", slow, 2)  # the refused call consumed nothing
    over, _ = store.get_many_limited(["i"], "client-1", slow, 1)
    other, _ = store.get_many_limited(["a"], "client-2", slow, 1)  # each client has its own budget

    assert first.admitted and entries == [state("a", 10), None, None]
    assert not straddling.admitted and 0 < straddling.wait_s <= 10.0 and again == [None, None, None]
    assert rest.admitted and not over.admitted and 0 < over.wait_s <= 10.0 and other.admitted


def test_the_limiter_fails_like_the_reads(backend: Backend) -> None:
    with pytest.raises(DependencyUnavailable):
        backend.unreachable().get_many_limited(["a"], "client-1", Rate(1.0, 1), 1)


def run_on(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """``main`` run to its end on a new event loop of asyncio's, or of uvloop's (the served functions' loop)."""
    factory = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_async_read_answered_while_its_loop_was_busy_is_not_a_timeout(redis_prefix: str, loop: str) -> None:
    """The deadline is Redis's silence, as the threaded store's socket timeout: a loop blocked past it by other
    work (here 100 ms against a 10 ms deadline) finds the reply received and returns it, on either loop
    (uvloop runs due timers before it reads the sockets: the reply is then still in the kernel)."""
    layout = KeyLayout(redis_prefix)
    RedisOnlineStore(redis.Redis.from_url(REDIS_URL), layout, 3600, 600).put_if_newer([state("a", 7)])
    reads = AsyncRedisReads(REDIS_URL, layout, 0.01, 0.2, 8)

    async def busy_loop_read() -> list[Cached | None]:
        await reads.get_many(["a"])  # connected before the measured read
        read = asyncio.ensure_future(reads.get_many(["a"]))
        await asyncio.sleep(0)  # the read sends its MGET...
        time.sleep(0.1)  # ...and the loop is busy well past the deadline while Redis answers
        return await read

    assert run_on(loop, busy_loop_read()) == [state("a", 7)]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_new_async_connection_made_while_its_loop_is_busy_is_not_a_timeout(redis_prefix: str, loop: str) -> None:
    """A read that must connect first, on a loop then blocked 100 ms by other work: the connection's deadline
    is the connect timeout (200 ms) plus one read deadline (10 ms), not a read deadline's multiple."""
    layout = KeyLayout(redis_prefix)
    RedisOnlineStore(redis.Redis.from_url(REDIS_URL), layout, 3600, 600).put_if_newer([state("a", 7)])
    reads = AsyncRedisReads(REDIS_URL, layout, 0.01, 0.2, 8)

    async def first_read_on_a_busy_loop() -> list[Cached | None]:
        read = asyncio.ensure_future(reads.get_many(["a"]))
        await asyncio.sleep(0)  # the read starts connecting...
        time.sleep(0.1)  # ...and the loop is busy past two read deadlines
        return await read

    assert run_on(loop, first_read_on_a_busy_loop()) == [state("a", 7)]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_reply_still_in_the_kernel_counts_as_received(loop: str) -> None:
    """What the deadline asks when it expires: a reply the loop has not read yet (still in the socket) is
    received; a connection with nothing to read is not."""
    from feature_store.stores.redis_online_async import _reply_waiting

    async def check() -> tuple[bool, bool, bool]:
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        conn = await client.connection_pool.get_connection()
        idle = _reply_waiting(conn)
        await conn.send_command("PING", check_health=False)
        time.sleep(0.05)  # Redis answers; the loop does not run, so the reply stays in the kernel
        waiting = _reply_waiting(conn)
        assert await conn.read_response() in (b"PONG", "PONG")
        after = _reply_waiting(conn)
        await client.connection_pool.release(conn)
        await client.aclose()
        return idle, waiting, after

    assert run_on(loop, check()) == (False, True, False)


def test_an_async_read_that_times_out_leaves_no_reply_for_the_next_one(silent_server: int, redis_prefix: str) -> None:
    """A timed-out connection is closed, never reused: the next read on the same loop opens a fresh one."""
    reads = AsyncRedisReads(f"redis://127.0.0.1:{silent_server}/0", KeyLayout(redis_prefix), 0.02, 0.2, 8)

    async def twice() -> list[type[BaseException]]:
        kinds = []
        for _ in range(2):
            try:
                await reads.get_many(["a"])
            except DependencyUnavailable as exc:
                kinds.append(type(exc))
        return kinds

    assert asyncio.run(twice()) == [DependencyTimeout, DependencyTimeout]
