"""Small Redis records of the serving side: served-version pointers, hit counters, the memory report.

Keys are KeyLayout's (docs/redis-keys.md): ``{prefix}:{feature_set}:active`` (no TTL, so
volatile-lru never evicts it) and ``{prefix}:{feature_set}:v{version}:stats`` (fields ``hits``,
``misses`` and ``undecodable``: cached values that could not be read). Every failure is
``DependencyUnavailable`` (or ``DependencyTimeout``).
"""

from __future__ import annotations

from collections.abc import Mapping

import redis

from feature_store.stores.redis_online import KeyLayout, unavailable

HitCounts = Mapping[tuple[str, int], tuple[int, int, int]]  # (feature set, version) -> (hits, misses, undecodable)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisAdmin:
    """Reads and writes the pointers and counters of one prefix."""

    def __init__(self, client: redis.Redis, layout: KeyLayout) -> None:
        self.client = client
        self.layout = layout

    def pointer(self, feature_set: str) -> str | None:
        """The served-version pointer as stored (None when there is none)."""
        try:
            raw = self.client.get(self.layout.active(feature_set))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return None if raw is None else _text(raw)

    def set_pointer(self, feature_set: str, version: int) -> str | None:
        """Point ``feature_set`` at ``version`` in one SET; the pointer as it was before."""
        try:
            previous = self.client.set(self.layout.active(feature_set), str(version), get=True)
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return _text(previous) if isinstance(previous, bytes | str) else None

    def add_hits(self, counts: HitCounts) -> None:
        """Add hit and miss counts; MULTI/EXEC: all of them land or none (so a failure can be retried)."""
        try:
            pipe = self.client.pipeline(transaction=True)
            for (name, version), (hits, misses, undecodable) in counts.items():
                key = self.layout.stats(name, version)
                pipe.hincrby(key, "hits", hits)
                pipe.hincrby(key, "misses", misses)
                if undecodable:
                    pipe.hincrby(key, "undecodable", undecodable)
            pipe.execute()
        except redis.RedisError as exc:
            raise unavailable(exc) from exc

    def hits(self, feature_set: str, version: int) -> dict[str, int]:
        """The counters of one version: ``hits``, ``misses`` and ``undecodable`` (absent ones are 0)."""
        try:
            raw = self.client.hgetall(self.layout.stats(feature_set, version))
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        counts = {_text(k): int(v) for k, v in raw.items()}
        return {name: counts.get(name, 0) for name in ("hits", "misses", "undecodable")}

    def memory(self) -> dict[str, int | str | None]:
        """What decides whether a full cache degrades to misses: memory used and allowed, policy, evictions."""
        try:
            memory = self.client.info("memory")
            stats = self.client.info("stats")
        except redis.RedisError as exc:
            raise unavailable(exc) from exc
        return {"used_memory": memory.get("used_memory"), "maxmemory": memory.get("maxmemory"),
                "maxmemory_policy": memory.get("maxmemory_policy"), "evicted_keys": stats.get("evicted_keys"),
                "expired_keys": stats.get("expired_keys")}
