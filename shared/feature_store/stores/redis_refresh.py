"""The Redis side of bulk refresh: batched compare-and-set writes, layout drops, run bookkeeping.

Writes keep the one rule of the online store (docs/redis-keys.md): a value lands only when its
watermark is at least the stored one. ``BulkWriter`` applies that rule to hundreds of keys per
script call instead of one, which is what makes tens of thousands of users per second possible
from one Python process; a pipeline of such calls is one round trip per chunk.

``RefreshState`` keeps a layout's refresh bookkeeping beside its states, under ``{prefix}:s{layout}:``
(the keys are listed in docs/redis-keys.md): the run locks, typed run checkpoints, shard leases, the
record of the last complete materialization and the incremental watermark. Living in the same Redis
as the states is deliberate: if that Redis loses its data, the record that the layout is
materialized goes with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from feature_store.stores.dialect import WATERMARK_HEX_DIGITS
from feature_store.stores.ports import Tombstone
from feature_store.stores.postgres_bulk import Vector
from feature_store.stores.redis_online import KeyLayout, encode, run_script, unavailable

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


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


class BulkWriter:
    """Compare-and-set writes of finished values, ``batch`` keys per script call, one round trip per call."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, batch: int) -> None:
        self.client = client
        self.layout = layout
        self.batch = batch
        self._put = client.register_script(_PUT_MANY_IF_NEWER)

    def put(self, vectors: Sequence[Vector], ttl_ms: int) -> int:
        """Write ``vectors`` unless a newer watermark is stored; return how many landed."""
        if not vectors:
            return 0
        parts = [vectors[i:i + self.batch] for i in range(0, len(vectors), self.batch)]
        try:
            return sum(int(n) for n in run_script(self.client, self._put, [
                ([self.layout.user(v.user_id) for v in part], [ttl_ms, *(v.value for v in part)]) for part in parts]))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def tombstone(self, user_ids: Sequence[str], watermark: int, ttl_ms: int) -> int:
        """Record that these users do not exist as of ``watermark`` (compare-and-set like any write)."""
        value = encode(Tombstone("", watermark))
        return self.put([Vector(u, value) for u in user_ids], ttl_ms)

    def delete(self, user_ids: Sequence[str]) -> int:
        """Drop these users' states (not compare-and-set: the next read recomputes them)."""
        if not user_ids:
            return 0
        try:
            return int(self.client.unlink(*[self.layout.user(u) for u in user_ids]))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def drop_step(self, layout: KeyLayout, cursor: int, count: int) -> tuple[int, int]:
        """One SCAN step over a layout's user keys and an UNLINK of what it found: (next cursor, deleted).

        A cursor of 0 after the first step means the whole layout has been scanned (SCAN guarantees
        every key present for the whole scan is returned at least once).
        """
        try:
            cursor, keys = self.client.scan(cursor=cursor, match=layout.user_pattern(), count=count)
            return int(cursor), int(self.client.unlink(*keys)) if keys else 0
        except redis.RedisError as exc:
            raise unavailable(exc) from exc


@dataclass
class Shard:
    """One id range of a full run: where it starts, where the next chunk starts, whether it is done."""

    bound: str
    next: str
    finished: bool = False


@dataclass
class FullRun:
    """A full run's checkpoint, as kept in its Redis hash (docs/redis-keys.md)."""

    feature_set: str
    version: int
    started_at: str
    complete: bool  # every user, not an id range: a finished run materializes the layout
    total: int
    shards: list[Shard]
    from_user: str = ""
    to_user: str | None = None
    source: str = "postgres"
    as_of: str | None = None  # the instant of the BigQuery mirrors a warm-up reads
    done: int = 0
    written: int = 0
    finished_at: str | None = None

    def to_hash(self) -> dict[str, str]:
        out = {"mode": "full", "feature_set": self.feature_set, "version": str(self.version),
               "started_at": self.started_at, "complete": "1" if self.complete else "0", "total": str(self.total),
               "shards": str(len(self.shards)), "done": str(self.done), "written": str(self.written),
               "from": self.from_user, "source": self.source}
        optional = {"to": self.to_user, "as_of": self.as_of, "finished_at": self.finished_at}
        out.update({k: v for k, v in optional.items() if v is not None})
        for i, shard in enumerate(self.shards):
            out[f"bound:{i}"], out[f"next:{i}"] = shard.bound, shard.next
            if shard.finished:
                out[f"finished:{i}"] = "1"
        return out

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> FullRun:
        shards = [Shard(raw[f"bound:{i}"], raw[f"next:{i}"], f"finished:{i}" in raw) for i in range(int(raw["shards"]))]
        return cls(feature_set=raw["feature_set"], version=int(raw["version"]), started_at=raw["started_at"],
                   complete=raw["complete"] == "1", total=int(raw["total"]), shards=shards, from_user=raw["from"],
                   to_user=raw.get("to"), source=raw.get("source", "postgres"), as_of=raw.get("as_of"),
                   done=int(raw.get("done", 0)), written=int(raw.get("written", 0)),
                   finished_at=raw.get("finished_at"))


@dataclass
class IncrementalRun:
    """The incremental pass in progress: the changes between ``since`` and ``until``, done up to ``after``."""

    since: str
    until: str
    started_at: str
    after: str = ""
    done: int = 0

    def to_hash(self) -> dict[str, str]:
        return {"since": self.since, "until": self.until, "started_at": self.started_at, "after": self.after,
                "done": str(self.done)}

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> IncrementalRun:
        return cls(raw["since"], raw["until"], raw["started_at"], raw.get("after", ""), int(raw.get("done", 0)))


INCREMENTAL = "incremental"  # the run id of the layout's incremental pass


@dataclass
class Materialized:
    """The record of the last complete full run of a layout: switching to a version needs one."""

    run_id: str
    started_at: str
    finished_at: str
    users: int
    source: str = "postgres"

    def to_dict(self) -> dict[str, str]:
        return {"run_id": self.run_id, "started_at": self.started_at, "finished_at": self.finished_at,
                "users": str(self.users), "source": self.source}


class RefreshState:
    """Refresh bookkeeping of one state layout, in the Redis that holds its states."""

    def __init__(self, client: redis.Redis, layout: KeyLayout, run_ttl_s: int) -> None:
        self.client = client
        self.layout = layout
        self.run_ttl_ms = run_ttl_s * 1000
        self._take = client.register_script(_TAKE_LOCK)
        self._release = client.register_script(_RELEASE_LOCK)

    # --- keys (docs/redis-keys.md) ------------------------------------------------------------

    def lock_key(self, kind: str) -> str:
        return self.layout.refresh("lock", kind)

    def run_key(self, run_id: str) -> str:
        return self.layout.refresh("run", run_id)

    def last_key(self, kind: str) -> str:
        return self.layout.refresh("last", kind)

    def lease_key(self, run_id: str, shard: int) -> str:
        return self.layout.refresh("lease", run_id, shard)

    @property
    def since_key(self) -> str:
        return self.layout.refresh("since")

    # --- locks and leases -----------------------------------------------------------------------

    def take(self, key: str, owner: str, ttl_ms: int) -> str:
        """Take ``key`` for ``owner`` (or renew it); return who holds it now."""
        try:
            holder = self._take(keys=[key], args=[owner, ttl_ms])
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return _text(holder) if isinstance(holder, bytes | str) else str(holder)

    def release(self, key: str, owner: str) -> None:
        try:
            self._release(keys=[key], args=[owner])
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def holder(self, key: str) -> str | None:
        return self._get(key)

    # --- runs -----------------------------------------------------------------------------------

    def save_full(self, run_id: str, run: FullRun) -> None:
        """Write a run's whole checkpoint (its hash has no TTL while it may be resumed)."""
        self._hset(self.run_key(run_id), run.to_hash())

    def load_full(self, run_id: str) -> FullRun | None:
        raw = self._hgetall(self.run_key(run_id))
        return FullRun.from_hash(raw) if raw.get("mode") == "full" else None

    def checkpoint(self, run_id: str, shard: int, next_user: str | None, done: int, written: int) -> None:
        """A chunk of ``shard`` landed: the shard goes on from ``next_user`` (None: it is finished)."""
        fields = {f"finished:{shard}": "1"} if next_user is None else {f"next:{shard}": next_user}
        self._hset(self.run_key(run_id), fields, {"done": done, "written": written})

    def save_incremental(self, run: IncrementalRun) -> None:
        self._hset(self.run_key(INCREMENTAL), run.to_hash())

    def load_incremental(self) -> IncrementalRun | None:
        raw = self._hgetall(self.run_key(INCREMENTAL))
        return IncrementalRun.from_hash(raw) if raw else None

    def incremental_progress(self, after: str, done: int) -> None:
        self._hset(self.run_key(INCREMENTAL), {"after": after}, {"done": done})

    def delete_incremental(self) -> None:
        self._delete(self.run_key(INCREMENTAL))

    def retire_run(self, run_id: str) -> None:
        """Keep a finished or abandoned run for ``run_ttl_s`` more (for operators), then let it expire."""
        try:
            self.client.pexpire(self.run_key(run_id), self.run_ttl_ms)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def replace_last_run(self, kind: str, run_id: str) -> str | None:
        """Record ``run_id`` as the latest run of its kind; return the one it replaces."""
        try:
            previous = self.client.set(self.last_key(kind), run_id, get=True)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return _text(previous) if isinstance(previous, bytes | str) else None

    def claim_finish(self, run_id: str, finished_at: str) -> bool:
        """True for exactly one caller: the one that records the run as finished."""
        try:
            return bool(self.client.hsetnx(self.run_key(run_id), "finished_at", finished_at))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    # --- materialization record, incremental watermark ------------------------------------------

    def mark_materialized(self, record: Materialized) -> None:
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.layout.materialized)
            pipe.hset(self.layout.materialized, mapping=dict[Any, Any](record.to_dict()))
            pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def materialized(self) -> dict[str, str] | None:
        return self._hgetall(self.layout.materialized) or None

    def forget_materialized(self) -> None:
        self._delete(self.layout.materialized)

    def since(self) -> str | None:
        return self._get(self.since_key)

    def set_since(self, value: str) -> None:
        try:
            self.client.set(self.since_key, value)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    # --- plumbing -------------------------------------------------------------------------------

    def _hset(self, key: str, fields: Mapping[str, str], increments: Mapping[str, int] | None = None) -> None:
        """Set fields of a hash and add to its counters, in one transaction."""
        try:
            pipe = self.client.pipeline(transaction=True)
            if fields:
                pipe.hset(key, mapping=dict[Any, Any](fields))
            for name, n in (increments or {}).items():
                pipe.hincrby(key, name, n)
            pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def _hgetall(self, key: str) -> dict[str, str]:
        try:
            return _hash(self.client.hgetall(key))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def _get(self, key: str) -> str | None:
        try:
            raw = self.client.get(key)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return None if raw is None else _text(raw)

    def _delete(self, key: str) -> None:
        try:
            self.client.delete(key)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
