"""The online store's reads on an event loop (redis.asyncio with hiredis): the async serving path's round trip.

The same keys, values, limiter script and errors as stores/redis_online.py (whose helpers build the
commands and decode the replies): only the waiting differs. Writes (write-back after a miss, CDC,
refresh) stay on the threaded store; a request that needs one runs on the serving pool.

Connections: each event loop has its own (a redis.asyncio connection belongs to the loop that opened
it), kept in a free list: a read takes one, sends its pipeline, reads the replies and puts it back;
~2x cheaper than the client's pool checkout, which locks and counts per command. A connection whose
state is unknown after an error (a timeout may leave a reply in flight) is closed, never reused. The
number of connections is bounded by the requests in flight on the loop, and by ``max_connections``.

Timeout: the threaded store's socket timeout fires when Redis sent nothing for that long. An asyncio
read timeout fires when the loop gets round to it: on a loop busy with other requests, a reply that
arrived in time is then refused as late, and the read degrades to the source for no fault of Redis's
(measured: 5 of 17,815 cached reads at 10 connections, 50 of 16,606 at 50). So the deadline here is
the threaded one: when it expires with the reply's bytes already received, it waits for the loop,
not for Redis; only when nothing arrived is the read a DependencyTimeout.
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio

from feature_store.domain.access import Rate
from feature_store.stores.ports import Admission, Cached
from feature_store.stores.redis_online import (
    RATE_SCRIPT,
    KeyLayout,
    admission,
    decoded,
    limited_mget_commands,
    rate_command,
    unavailable,
)

T = TypeVar("T")
Connection = Any  # redis.asyncio.connection.AbstractConnection (its methods are untyped)


def _reply_waiting(conn: Connection) -> bool:
    """Whether bytes of a reply were received and not yet read: in the connection's stream buffer (the loop
    read the socket but the read has not run yet), or still in the kernel (a loop whose due timers run before
    it reads its sockets, as uvloop's do, or a reply arriving while the loop was busy)."""
    reader = getattr(conn, "_reader", None)
    if reader is not None and getattr(reader, "_buffer", None):
        return True
    writer = getattr(conn, "_writer", None)
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None:
        return False
    poller = select.poll()
    try:
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile: nothing will come
        return False


class _LoopConnections:
    """One event loop's client and its idle connections."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.idle: list[Connection] = []


class AsyncRedisReads:
    """``get_many`` and ``get_many_limited`` of the online store, awaited; one round trip each."""

    def __init__(self, url: str, layout: KeyLayout, socket_timeout_s: float, connect_timeout_s: float,
                 max_connections: int) -> None:
        self.layout = layout
        self._url = url
        self.timeout_s = socket_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
            weakref.WeakKeyDictionary())

    async def get_many(self, user_ids: Sequence[str]) -> list[Cached | None]:
        if not user_ids:
            return []
        keys = [self.layout.user(u) for u in user_ids]

        async def mget(conn: Connection) -> list[bytes | None]:
            await conn.send_packed_command(conn.pack_command("MGET", *keys), check_health=False)
            raws: list[bytes | None] = await conn.read_response()
            return raws

        return decoded(user_ids, await self._on_connection(mget))

    async def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                               cost: int) -> tuple[Admission, list[Cached | None]]:
        keys = [self.layout.user(u) for u in user_ids]
        rate_call = rate_command(self.layout, client_id, rate, cost)

        async def limited(conn: Connection) -> tuple[Any, list[bytes | None]]:
            await conn.send_packed_command(conn.pack_commands(limited_mget_commands(rate_call, keys)),
                                           check_health=False)
            try:
                verdict: Any = await conn.read_response()
            except redis.exceptions.NoScriptError as exc:
                verdict = exc  # the MGET's reply still follows: read it before the connection is reused
            return verdict, (await conn.read_response() if keys else [])

        verdict, raws = await self._on_connection(limited)
        if isinstance(verdict, redis.exceptions.NoScriptError):  # Redis restarted or flushed its scripts
            async def reload(conn: Connection) -> Any:
                await conn.send_command("SCRIPT", "LOAD", RATE_SCRIPT, check_health=False)
                await conn.read_response()
                await conn.send_command(*rate_call, check_health=False)
                return await conn.read_response()

            verdict = await self._on_connection(reload)
        return admission(verdict), decoded(user_ids, raws)

    async def _on_connection(self, call: Callable[[Connection], Awaitable[T]]) -> T:
        """``call(connection)`` on an idle connection of this loop; a closed idle one is retried once."""
        pool = self._pool()
        for attempt in (1, 2):
            conn = pool.idle.pop() if pool.idle else None
            try:
                if conn is None:
                    conn = await self._connect(pool)
                result = await self._within_deadline(conn, call)
            except redis.ConnectionError as exc:
                await self._drop(pool, conn)
                if attempt == 2 or conn is None:
                    raise unavailable(exc) from exc
                continue
            except redis.RedisError as exc:
                await self._drop(pool, conn)
                raise unavailable(exc) from exc
            except BaseException:  # cancelled mid-call: the connection's state is unknown
                await self._drop(pool, conn)
                raise
            pool.idle.append(conn)
            return result
        raise AssertionError("unreachable")

    async def _connect(self, pool: _LoopConnections) -> Connection:
        """A new connection: the TCP connect within the connect timeout (redis-py's own, as the threaded
        store's), then redis-py's handshake within one read deadline of Redis's silence, as any read.

        Both are timed as ``_within_deadline`` times a read, never by the loop's clock alone: with a plain
        asyncio deadline of two read deadlines (20 ms), at 50 requests in flight per loop nearly every new
        connection timed out, each timeout dropped a connection and made another one, and the breaker
        opened (2,800 of 3,300 cached reads degraded in 8 s, measured); and a longer plain deadline hid a
        Redis that accepts connections but never answers from the breaker (a timeout that overran its
        deadline twice counts as our own starvation). Connections are kept: a loop pays this once per
        connection, not per read.
        """
        connections = pool.client.connection_pool
        conn = connections.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self._within_deadline(conn, connections.ensure_connection,
                                        connecting_until=asyncio.get_running_loop().time() + self._connect_timeout_s)
        except BaseException:
            await self._drop(pool, conn)
            raise
        return conn

    async def _within_deadline(self, conn: Connection, call: Callable[[Connection], Awaitable[T]],
                               connecting_until: float | None = None) -> T:
        """``call(conn)``, cancelled with a redis TimeoutError once ``timeout_s`` passed with no byte of a reply
        (and, for a new connection, its TCP connect over: redis-py bounds that by ``connecting_until``)."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        expired = False
        handle: asyncio.TimerHandle

        def expire() -> None:
            nonlocal handle, expired
            connecting = (connecting_until is not None and getattr(conn, "_writer", None) is None
                          and loop.time() < connecting_until)
            if connecting or _reply_waiting(conn):
                handle = loop.call_later(self.timeout_s, expire)  # answered, or still connecting: not silence
                return
            expired = True
            task.cancel()

        handle = loop.call_later(self.timeout_s, expire)
        try:
            return await call(conn)
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:
                raise redis.TimeoutError(f"no reply from Redis within {self.timeout_s * 1000:g} ms") from None
            raise
        finally:
            handle.cancel()

    def _pool(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        pool = self._loops.get(loop)
        if pool is None:
            # No read timeout of redis-py's: _within_deadline is this store's (see the module's docstring).
            client = redis.asyncio.Redis.from_url(self._url, socket_timeout=None,
                                                  socket_connect_timeout=self._connect_timeout_s,
                                                  max_connections=self._max_connections)
            pool = self._loops[loop] = _LoopConnections(client)
        return pool

    @staticmethod
    async def _drop(pool: _LoopConnections, conn: Connection | None) -> None:
        if conn is None:
            return
        try:
            await conn.disconnect(nowait=True)
        finally:
            await pool.client.connection_pool.release(conn)
