"""The online store on Redis: one key per (feature set, version, user), written compare-and-set.

Key layout (docs/redis-keys.md, pinned byte-for-byte by tests/unit/test_redis_layout.py):

    {prefix}:{feature_set}:v{version}:u:{user_id}   -> value (below), with a TTL
    {prefix}:{feature_set}:active                   -> served version number, e.g. "1"

Value: 24 lowercase hex digits of the source watermark, then either ``{json}`` (the
compact UserState list, domain/state.py) or ``-`` (a tombstone: the user was deleted at
that watermark). The fixed-width prefix lets the Lua script compare watermarks as strings:
a write lands only when its watermark is at least the stored one, so duplicate, redelivered
or reordered writes can never replace newer data with older.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from redis.commands.core import Script

from feature_store.domain.state import UserState
from feature_store.errors import DependencyTimeout, DependencyUnavailable
from feature_store.stores.dialect import WATERMARK_HEX_DIGITS

TOMBSTONE = "-"

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


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The user was deleted at ``watermark``."""

    user_id: str
    watermark: int


Entry = UserState | Tombstone


class KeyLayout:
    """Builds the keys of one feature set version; the only place key strings are made."""

    def __init__(self, prefix: str, feature_set: str, version: int) -> None:
        self.prefix, self.feature_set, self.version = prefix, feature_set, version
        self._user_prefix = f"{prefix}:{feature_set}:v{version}:u:"

    def user(self, user_id: str) -> str:
        return self._user_prefix + user_id

    def user_pattern(self) -> str:
        """A SCAN pattern matching every user key of this version."""
        return self._user_prefix + "*"

    @staticmethod
    def active(prefix: str, feature_set: str) -> str:
        return f"{prefix}:{feature_set}:active"


def encode(entry: Entry) -> str:
    head = f"{entry.watermark:0{WATERMARK_HEX_DIGITS}x}"
    if isinstance(entry, Tombstone):
        return head + TOMBSTONE
    return head + orjson.dumps(entry.to_compact()).decode()


def decode(user_id: str, raw: bytes | str) -> Entry:
    text = raw.decode() if isinstance(raw, bytes) else raw
    watermark = int(text[:WATERMARK_HEX_DIGITS], 16)
    body = text[WATERMARK_HEX_DIGITS:]
    if body == TOMBSTONE:
        return Tombstone(user_id, watermark)
    return UserState.from_compact(user_id, watermark, orjson.loads(body))


class RedisOnlineStore:
    """Reads and compare-and-set writes of feature vectors; each call is one round trip."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, ttl_s: int, tombstone_ttl_s: int) -> None:
        self.client = client
        self.layout = layout
        self.ttl_ms = ttl_s * 1000
        self.tombstone_ttl_ms = tombstone_ttl_s * 1000
        self._put = client.register_script(_PUT_IF_NEWER)
        self._local = threading.local()

    def get_many(self, user_ids: Sequence[str]) -> list[Entry | None]:
        """Entries in the order asked, ``None`` where nothing is cached (one MGET)."""
        if not user_ids:
            return []
        keys = [self.layout.user(u) for u in user_ids]
        try:
            raws = self._mget(keys)
        except redis.TimeoutError as exc:
            raise DependencyTimeout("redis", type(exc).__name__) from exc
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", type(exc).__name__) from exc
        return [None if raw is None else decode(u, raw) for u, raw in zip(user_ids, raws, strict=True)]

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        """MGET on this thread's own connection from the client's pool.

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
                conn.send_command("MGET", *keys)
                return conn.read_response()  # type: ignore[no-any-return]
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
        return put_everywhere([self], entries)

    def delete_many(self, user_ids: Sequence[str]) -> int:
        """Drop the cached vectors of these users (the next read recomputes them)."""
        if not user_ids:
            return 0
        try:
            return int(self.client.unlink(*[self.layout.user(u) for u in user_ids]))
        except redis.RedisError as exc:
            raise DependencyUnavailable("redis", type(exc).__name__) from exc


def put_everywhere(stores: Sequence[RedisOnlineStore], entries: Sequence[Entry]) -> int:
    """``put_if_newer`` into several layouts (feature-set versions) of one client: one round trip in all."""
    if not stores or not entries:
        return 0
    client = stores[0].client
    if any(store.client is not client for store in stores):
        raise ValueError("put_everywhere needs stores sharing one Redis client")
    values = [encode(e) for e in entries]
    tombstone = [isinstance(e, Tombstone) for e in entries]
    try:
        results = run_script(client, stores[0]._put, [
            ((store.layout.user(e.user_id),), (value, store.tombstone_ttl_ms if dead else store.ttl_ms))
            for store in stores for e, value, dead in zip(entries, values, tombstone, strict=True)])
    except redis.RedisError as exc:
        raise DependencyUnavailable("redis", type(exc).__name__) from exc
    return sum(int(r) for r in results)
