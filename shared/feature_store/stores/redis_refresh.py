"""The Redis side of bulk refresh: batched compare-and-set writes, version drops, run bookkeeping.

Writes keep the one rule of the online store (docs/redis-keys.md): a value lands only when its
watermark is at least the stored one. ``BulkWriter`` applies that rule to hundreds of keys per
script call instead of one, which is what makes tens of thousands of users per second possible
from one Python process; a pipeline of such calls is one round trip per chunk.

``RefreshState`` keeps a version's refresh bookkeeping beside its vectors, under
``{prefix}:{feature_set}:v{version}:...`` (the keys are listed in docs/redis-keys.md): the run lock,
run checkpoints, shard leases, the record of the last complete materialization, the incremental
watermark and the hit counters. Living in the same Redis as the vectors is deliberate: if that
Redis loses its data, the record that a version is materialized goes with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from feature_store.errors import DependencyUnavailable
from feature_store.stores.dialect import WATERMARK_HEX_DIGITS
from feature_store.stores.postgres_bulk import Vector
from feature_store.stores.redis_online import TOMBSTONE, KeyLayout, run_script

# KEYS: user keys; ARGV[1]: ttl in ms; ARGV[i + 1]: the value of KEYS[i] (watermark prefix first).
# The same rule as redis_online._PUT_IF_NEWER, key by key. Returns how many were written.
_PUT_MANY_IF_NEWER = f"""
local written = 0
for i = 1, #KEYS do
  local value = ARGV[i + 1]
  local cur = redis.call('GET', KEYS[i])
  if not cur or string.sub(cur, 1, {WATERMARK_HEX_DIGITS}) <= string.sub(value, 1, {WATERMARK_HEX_DIGITS}) then
    redis.call('SET', KEYS[i], value, 'PX', ARGV[1])
    written = written + 1
  end
end
return written
"""

# KEYS[1] lock; ARGV[1] owner; ARGV[2] ttl ms. Takes a free lock or renews one the owner holds;
# returns the holder after the call (the owner when it succeeded).
_TAKE_LOCK = """
local holder = redis.call('GET', KEYS[1])
if not holder or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""

# KEYS[1] lock; ARGV[1] owner. Deletes the lock only when the owner still holds it.
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def stats_key(prefix: str, feature_set: str, version: int) -> str:
    """The hash of one feature set version's hit counters (fields ``hits`` and ``misses``)."""
    return f"{prefix}:{feature_set}:v{version}:stats"


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _hash(raw: dict[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _unavailable(exc: redis.RedisError) -> DependencyUnavailable:
    return DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}"[:200])


def memory_info(client: redis.Redis) -> dict[str, int | str | None]:
    """What decides whether a full cache degrades to misses: memory used and allowed, policy, evictions."""
    try:
        memory = client.info("memory")
        stats = client.info("stats")
    except redis.RedisError as exc:
        raise _unavailable(exc) from exc
    return {"used_memory": memory.get("used_memory"), "maxmemory": memory.get("maxmemory"),
            "maxmemory_policy": memory.get("maxmemory_policy"), "evicted_keys": stats.get("evicted_keys"),
            "expired_keys": stats.get("expired_keys")}


class BulkWriter:
    """Compare-and-set writes of finished values, ``batch`` keys per script call, one round trip per call."""

    def __init__(self, client: redis.Redis, batch: int) -> None:
        self.client = client
        self.batch = batch
        self._put = client.register_script(_PUT_MANY_IF_NEWER)

    def put(self, layouts: Sequence[KeyLayout], vectors: Sequence[Vector], ttl_ms: int) -> int:
        """Write ``vectors`` under every layout unless a newer watermark is stored; return how many landed."""
        if not vectors or not layouts:
            return 0
        try:
            parts = [vectors[i:i + self.batch] for i in range(0, len(vectors), self.batch)]
            return sum(int(n) for n in run_script(self.client, self._put, [
                ([layout.user(v.user_id) for v in part], [ttl_ms, *(v.value for v in part)])
                for layout in layouts for part in parts]))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def tombstone(self, layouts: Sequence[KeyLayout], user_ids: Sequence[str], watermark: int, ttl_ms: int) -> int:
        """Record that these users do not exist as of ``watermark`` (compare-and-set like any write)."""
        value = f"{watermark:0{WATERMARK_HEX_DIGITS}x}{TOMBSTONE}"
        return self.put(layouts, [Vector(u, value) for u in user_ids], ttl_ms)

    def delete(self, layouts: Sequence[KeyLayout], user_ids: Sequence[str]) -> int:
        """Drop these users' vectors (not compare-and-set: the next read recomputes them)."""
        keys = [layout.user(u) for layout in layouts for u in user_ids]
        if not keys:
            return 0
        try:
            return int(self.client.unlink(*keys))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def drop_step(self, layout: KeyLayout, cursor: int, count: int) -> tuple[int, int]:
        """One SCAN step over the version's user keys and an UNLINK of what it found: (next cursor, deleted).

        A cursor of 0 after the first step means the whole version has been scanned (SCAN guarantees
        every key present for the whole scan is returned at least once).
        """
        try:
            cursor, keys = self.client.scan(cursor=cursor, match=layout.user_pattern(), count=count)
            return int(cursor), int(self.client.unlink(*keys)) if keys else 0
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc


class RefreshState:
    """Refresh bookkeeping of one feature set version, in the Redis that holds its vectors."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, run_ttl_s: int) -> None:
        self.client = client
        self.layout = layout
        self.run_ttl_ms = run_ttl_s * 1000
        self._base = f"{layout.prefix}:{layout.feature_set}:v{layout.version}"
        self._take = client.register_script(_TAKE_LOCK)
        self._release = client.register_script(_RELEASE_LOCK)

    # --- keys (docs/redis-keys.md) ------------------------------------------------------------

    def lock_key(self, kind: str) -> str:
        return f"{self._base}:refresh:lock:{kind}"

    def run_key(self, run_id: str) -> str:
        return f"{self._base}:refresh:run:{run_id}"

    def last_key(self, kind: str) -> str:
        return f"{self._base}:refresh:last:{kind}"

    def lease_key(self, run_id: str, shard: int) -> str:
        return f"{self._base}:refresh:lease:{run_id}:{shard}"

    @property
    def materialized_key(self) -> str:
        return f"{self._base}:materialized"

    @property
    def since_key(self) -> str:
        return f"{self._base}:refresh:since"

    @property
    def stats_key(self) -> str:
        return stats_key(self.layout.prefix, self.layout.feature_set, self.layout.version)

    # --- locks and leases -----------------------------------------------------------------------

    def take(self, key: str, owner: str, ttl_ms: int) -> str:
        """Take ``key`` for ``owner`` (or renew it); return who holds it now."""
        try:
            holder = self._take(keys=[key], args=[owner, ttl_ms])
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return _text(holder) if isinstance(holder, bytes | str) else str(holder)

    def release(self, key: str, owner: str) -> None:
        try:
            self._release(keys=[key], args=[owner])
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def holder(self, key: str) -> str | None:
        return self._get(key)

    # --- runs -----------------------------------------------------------------------------------

    def save_run(self, run_id: str, fields: Mapping[str, str | int | float],
                 increments: Mapping[str, int] | None = None) -> None:
        """Write checkpoint fields of a run (and add to its counters) in one transaction.

        A run's hash has no TTL while it may be resumed, so volatile-lru never evicts a checkpoint;
        ``retire_run`` gives it one when it finishes or is replaced.
        """
        key = self.run_key(run_id)
        try:
            pipe = self.client.pipeline(transaction=True)
            if fields:
                pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
            for name, n in (increments or {}).items():
                pipe.hincrby(key, name, n)
            pipe.execute()
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def retire_run(self, run_id: str) -> None:
        """Keep a finished or abandoned run for ``run_ttl_s`` more (for operators), then let it expire."""
        try:
            self.client.pexpire(self.run_key(run_id), self.run_ttl_ms)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def replace_last_run(self, kind: str, run_id: str) -> str | None:
        """Record ``run_id`` as the latest run of its kind; return the one it replaces."""
        try:
            previous = self.client.set(self.last_key(kind), run_id, get=True)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return _text(previous) if isinstance(previous, bytes | str) else None

    def delete_run(self, run_id: str) -> None:
        self._delete(self.run_key(run_id))

    def load_run(self, run_id: str) -> dict[str, str] | None:
        try:
            raw = self.client.hgetall(self.run_key(run_id))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return _hash(raw) or None

    def claim_finish(self, run_id: str, finished_at: str) -> bool:
        """True for exactly one caller: the one that records the run as finished."""
        try:
            return bool(self.client.hsetnx(self.run_key(run_id), "finished_at", finished_at))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    # --- materialization record, incremental watermark, counters --------------------------------

    def mark_materialized(self, fields: Mapping[str, str | int]) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.materialized_key)
            pipe.hset(self.materialized_key, mapping={k: str(v) for k, v in fields.items()})
            pipe.execute()
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def materialized(self) -> dict[str, str] | None:
        try:
            raw = self.client.hgetall(self.materialized_key)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return _hash(raw) or None

    def forget_materialized(self) -> None:
        self._delete(self.materialized_key)

    def since(self) -> str | None:
        return self._get(self.since_key)

    def set_since(self, value: str) -> None:
        try:
            self.client.set(self.since_key, value)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc

    def counters(self) -> dict[str, int]:
        try:
            raw = self.client.hgetall(self.stats_key)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return {k: int(v) for k, v in _hash(raw).items()}

    def _get(self, key: str) -> str | None:
        try:
            raw = self.client.get(key)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else _text(raw)

    def _delete(self, key: str) -> None:
        try:
            self.client.delete(key)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
