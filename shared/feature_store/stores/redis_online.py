"""The online store on Redis: one key per (state layout, user), written compare-and-set.

Key layout (docs/redis-keys.md, pinned byte-for-byte by tests/unit/test_redis_layout.py and
tests/unit/test_refresh_keys.py); ``KeyLayout`` is the only place key strings are made:

    {prefix}:s{layout}:u:{user_id}                  -> value (below), with a TTL
    {prefix}:{feature_set}:active                   -> served version number, e.g. "1"
    {prefix}:rl:{client_id}                         -> the client's rate limit state (GCRA: theoretical
                                                       arrival time, microseconds of Redis's clock), with a TTL

Every feature-set version finishes its features from the same cached state, so the state is keyed
by its layout (domain/state.py: LAYOUT), not by the version: a new version of the catalog costs no
memory and CDC writes each user once.

Value: 24 lowercase hex digits of the source watermark, then the state's binary body (its first
byte is the layout number, domain/state_binary.py), or ``[...]`` (the state as a JSON list, for a
state the binary body cannot hold exactly), or ``-`` (a tombstone: the user was deleted at that
watermark). The fixed-width prefix lets the Lua script compare watermarks as strings:
a write lands only when its watermark is at least the stored one, so duplicate, redelivered
or reordered writes can never replace newer data with older.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
import redis
from redis.commands.core import Script

from feature_store.domain.access import Rate
from feature_store.domain.state import LAYOUT, UserState
from feature_store.domain.state_binary import pack, unpack
from feature_store.errors import DependencyTimeout, DependencyUnavailable
from feature_store.stores.dialect import WATERMARK_HEX_DIGITS
from feature_store.stores.ports import Admission, Cached, Entry, Tombstone, Undecodable

T = TypeVar("T")
TOMBSTONE = "-"
_TOMBSTONE = TOMBSTONE.encode()
_BINARY = LAYOUT  # the first byte of a binary body

# KEYS[1] key; ARGV[1] new value (watermark prefix first); ARGV[2] ttl in ms.
# Returns 1 when written, 0 when the stored watermark is newer.
_PUT_IF_NEWER = f"""
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, {WATERMARK_HEX_DIGITS}) > string.sub(ARGV[1], 1, {WATERMARK_HEX_DIGITS}) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


# The rate limiter (GCRA, one key per client, Redis's own clock so every instance shares one time).
# KEYS[1] the client's key; ARGV[1] microseconds per unit; ARGV[2] burst (units); ARGV[3] cost (units).
# Returns {1, 0} when admitted (the cost is consumed) or {0, wait_us} when refused (nothing is consumed:
# a batch straddling the limit is refused whole and leaves the budget as it was).
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[3]) * interval
local wait = new_tat - tonumber(ARGV[2]) * interval - now
if wait > 0 then
  return {0, wait}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""


RATE_SCRIPT = _RATE
RATE_SHA = hashlib.sha1(_RATE.encode()).hexdigest()  # what EVALSHA names it by (redis-py's Script.sha)


def rate_command(layout: KeyLayout, client_id: str, rate: Rate, cost: int) -> tuple[Any, ...]:
    """The limiter's EVALSHA charging ``client_id`` ``cost`` units."""
    return ("EVALSHA", RATE_SHA, 1, layout.rate(client_id), rate.interval_us, rate.burst, cost)


def limited_mget_commands(rate_call: tuple[Any, ...], keys: list[str]) -> list[tuple[Any, ...]]:
    """The limiter's call, then the MGET of ``keys`` (none when there are no keys): one pipeline."""
    return [rate_call, ("MGET", *keys)] if keys else [rate_call]


def admission(verdict: Sequence[Any]) -> Admission:
    """The limiter script's reply ``{admitted, wait_us}`` as an Admission."""
    return Admission(int(verdict[0]) == 1, int(verdict[1]) / 1_000_000)


def decoded(user_ids: Sequence[str], raws: Sequence[bytes | None]) -> list[Cached | None]:
    """An MGET's reply as the entries of ``user_ids``, None where nothing is cached."""
    return [None if raw is None else decode(u, raw) for u, raw in zip(user_ids, raws, strict=True)]


def run_script(client: redis.Redis, script: Script,
               calls: Iterable[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run ``script`` once per ``(keys, args)``, all in one pipeline: one round trip.

    redis-py's Script inside a pipeline asks SCRIPT EXISTS before every execute, a second round
    trip per batch. Here the script is sent by its SHA and loaded only when Redis answers NOSCRIPT
    (after a restart or a SCRIPT FLUSH); the pipeline is then sent again. Every script this is used
    with is a compare-and-set on the watermark, so a command that did run the first time changes
    nothing the second.
    """
    commands = [(len(keys), *keys, *args) for keys, args in calls]
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command("EVALSHA", script.sha, *command)  # type: ignore[no-untyped-call]
        try:
            return pipe.execute()
        except redis.exceptions.NoScriptError:
            if attempt == 2:
                raise
            client.script_load(script.script)
    raise AssertionError("unreachable")


# KEYS[1] key; ARGV[1] the value expected. Deletes the key only while it still holds that value.
_DISCARD_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def unavailable(exc: redis.RedisError) -> DependencyUnavailable:
    """The typed error of a failed Redis call: a timeout, or Redis being unreachable or failing."""
    detail = f"{type(exc).__name__}: {exc}"[:200]
    if isinstance(exc, redis.TimeoutError):
        return DependencyTimeout("redis", detail)
    return DependencyUnavailable("redis", detail)


class KeyLayout:
    """Builds every Redis key of one prefix and state layout (docs/redis-keys.md); nothing else makes keys."""

    def __init__(self, prefix: str, layout: int = LAYOUT) -> None:
        self.prefix, self.layout = prefix, layout
        self.base = f"{prefix}:s{layout}"
        self._user_prefix = f"{self.base}:u:"

    def user(self, user_id: str) -> str:
        return self._user_prefix + user_id

    def rate(self, client_id: str) -> str:
        """The rate limiter's state of one client (shared by every instance and both transports)."""
        return f"{self.prefix}:rl:{client_id}"

    def user_pattern(self) -> str:
        """A SCAN pattern matching every user key of this layout."""
        return self._user_prefix + "*"

    # Refresh bookkeeping of the layout (stores/redis_refresh.py: RefreshState).
    def refresh(self, *parts: str | int) -> str:
        return ":".join((self.base, "refresh", *map(str, parts)))

    @property
    def materialized(self) -> str:
        return f"{self.base}:materialized"

    # Per feature set: the served-version pointer and each version's hit counters.
    def active(self, feature_set: str) -> str:
        return f"{self.prefix}:{feature_set}:active"

    def stats(self, feature_set: str, version: int) -> str:
        return f"{self.prefix}:{feature_set}:v{version}:stats"


def watermark_head(watermark: int) -> bytes:
    """The fixed-width prefix every value starts with: the watermark as 24 lowercase hex digits."""
    return f"{watermark:0{WATERMARK_HEX_DIGITS}x}".encode()


def encode(entry: Entry) -> bytes:
    """The stored value of an entry: the binary body when it holds the state exactly, else the JSON list."""
    head = watermark_head(entry.watermark)
    if isinstance(entry, Tombstone):
        return head + _TOMBSTONE
    return head + (pack(entry) or orjson.dumps(entry.to_compact()))


def decode(user_id: str, raw: bytes) -> Cached:
    """The entry a stored value encodes, or Undecodable when it cannot be read (never raises)."""
    try:
        watermark = int(raw[:WATERMARK_HEX_DIGITS], 16)
        if raw[WATERMARK_HEX_DIGITS] == _BINARY:
            return unpack(user_id, watermark, raw, WATERMARK_HEX_DIGITS)
        body = raw[WATERMARK_HEX_DIGITS:]
        if body == _TOMBSTONE:
            return Tombstone(user_id, watermark)
        return UserState.from_compact(user_id, watermark, orjson.loads(body))
    except Exception:  # any malformed value: a layout change mid-deploy, a corrupted or foreign key
        return Undecodable(user_id, raw)


class RedisOnlineStore:
    """Reads and compare-and-set writes of cached states; each call is one round trip."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, ttl_s: int, tombstone_ttl_s: int) -> None:
        self.client = client
        self.layout = layout
        self.ttl_ms = ttl_s * 1000
        self.tombstone_ttl_ms = tombstone_ttl_s * 1000
        self._put = client.register_script(_PUT_IF_NEWER)
        self._discard = client.register_script(_DISCARD_IF_SAME)
        self._local = threading.local()
        self._patient_clients: dict[float, redis.Redis] = {}

    def get_many(self, user_ids: Sequence[str], wait_s: float | None = None) -> list[Cached | None]:
        """Entries in the order asked, ``None`` where nothing is cached (one MGET); the reply waited for
        ``wait_s`` instead of the socket timeout when given."""
        if not user_ids:
            return []
        keys = [self.layout.user(u) for u in user_ids]
        try:
            raws = self._mget(keys, wait_s)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return decoded(user_ids, raws)

    def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                         cost: int) -> tuple[Admission, list[Cached | None]]:
        """The client's rate limiter charged ``cost`` and the entries of ``user_ids``: one pipeline, one round trip.

        The entries are read whatever the limiter answers (the caller discards them when refused).
        """
        keys = [self.layout.user(u) for u in user_ids]
        rate_call = rate_command(self.layout, client_id, rate, cost)
        try:
            verdict, raws = self._on_connection(lambda conn: self._limited_mget(conn, rate_call, keys))
            if isinstance(verdict, redis.exceptions.NoScriptError):  # Redis restarted or flushed its scripts
                self.client.script_load(RATE_SCRIPT)
                verdict = self.client.execute_command(*rate_call)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return admission(verdict), decoded(user_ids, raws)

    @staticmethod
    def _limited_mget(conn: Any, rate_call: tuple[Any, ...], keys: list[str]) -> tuple[Any, list[bytes | None]]:
        conn.send_packed_command(conn.pack_commands(limited_mget_commands(rate_call, keys)))
        try:
            verdict: Any = conn.read_response()
        except redis.exceptions.NoScriptError as exc:
            verdict = exc  # the MGET's reply still follows: read it before the connection is reused
        return verdict, (conn.read_response() if keys else [])

    def _mget(self, keys: list[str], wait_s: float | None) -> list[bytes | None]:
        if wait_s is None:
            return self._on_connection(lambda conn: conn.send_command("MGET", *keys) or conn.read_response())
        return self._patient(wait_s).mget(keys)  # type: ignore[return-value]  # decode_responses is off: bytes

    def _patient(self, wait_s: float) -> redis.Redis:
        """A client like this store's whose every read (the connection's handshake included) waits ``wait_s``:
        the reader's rare last resort, not worth a connection held per thread."""
        client = self._patient_clients.get(wait_s)
        if client is None:
            pool = self.client.connection_pool
            client = redis.Redis(connection_pool=type(pool)(
                connection_class=pool.connection_class, max_connections=pool.max_connections,
                **{**pool.connection_kwargs, "socket_timeout": wait_s}))
            self._patient_clients[wait_s] = client
        return client

    def _on_connection(self, call: Callable[[Any], T]) -> T:
        """``call(connection)`` on this thread's own connection from the client's pool (the read path's MGET).

        The hot path of every read: sending on a held connection costs ~30 us of CPU against ~90 us
        through the client's per-command pool checkout (measured). Same pool, same timeouts. A
        connection the server closed while idle fails on first use: that one is retried once on a
        fresh connection; a timeout is never retried (the caller degrades instead of waiting twice).
        """
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.client.connection_pool.get_connection()
            try:
                return call(conn)
            except redis.ConnectionError:
                self._drop(conn)
                if attempt == 2:
                    raise
            except BaseException:
                self._drop(conn)
                raise
        raise AssertionError("unreachable")

    def _drop(self, conn: Any) -> None:
        """Forget a connection whose state is unknown (a late reply must never answer a later command)."""
        self._local.conn = None
        conn.disconnect()
        self.client.connection_pool.release(conn)

    def put_if_newer(self, entries: Sequence[Entry]) -> int:
        """Write each entry unless a newer watermark is stored; return how many were written."""
        if not entries:
            return 0
        calls = [((self.layout.user(e.user_id),),
                  (encode(e), self.tombstone_ttl_ms if isinstance(e, Tombstone) else self.ttl_ms)) for e in entries]
        try:
            return sum(int(r) for r in run_script(self.client, self._put, calls))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def discard(self, items: Sequence[Undecodable]) -> int:
        """Delete each undecodable value if it is still the one stored (a newer write is kept)."""
        if not items:
            return 0
        try:
            return sum(int(r) for r in run_script(self.client, self._discard,
                                                  [((self.layout.user(i.user_id),), (i.raw,)) for i in items]))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def delete_many(self, user_ids: Sequence[str]) -> int:
        """Drop the cached states of these users (the next read recomputes them)."""
        if not user_ids:
            return 0
        try:
            return int(self.client.unlink(*[self.layout.user(u) for u in user_ids]))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
