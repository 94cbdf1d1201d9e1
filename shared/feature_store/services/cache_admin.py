"""Administration of the online store: drop vectors, switch the served version, report hit rate and memory.

These are refresh_cache's modes that compute nothing from the source (``invalidate``, ``switch``,
``stats``); services/refresh.py's Refresher extends CacheAdmin with the ones that do. Keys and
records are those of docs/redis-keys.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import Conflict
from feature_store.logs import get_logger
from feature_store.services.refresh_pipeline import Budget
from feature_store.services.versions import ServedVersions, catalog_versions
from feature_store.stores.redis_online import KeyLayout
from feature_store.stores.redis_refresh import BulkWriter, RefreshState, memory_info

log = get_logger("feature_store.refresh")


class CacheAdmin:
    """Invalidation, version switching and statistics over the bulk writer's Redis."""

    def __init__(self, writer: BulkWriter, versions: ServedVersions, prefix: str, run_ttl_s: int,
                 scan_count: int = 1000) -> None:
        self.writer = writer
        self.versions = versions
        self.prefix = prefix
        self.run_ttl_s = run_ttl_s
        self.scan_count = scan_count

    def layout(self, fs: FeatureSet) -> KeyLayout:
        return KeyLayout(self.prefix, fs.name, fs.version)

    def state(self, fs: FeatureSet) -> RefreshState:
        return RefreshState(self.writer.client, self.layout(fs), self.run_ttl_s)

    def _served(self, name: str) -> FeatureSet:
        return get_feature_set(name, self.versions.served(name))

    def invalidate_users(self, name: str, user_ids: Sequence[str], version: int | None = None) -> dict[str, Any]:
        """Drop these users' vectors in one version, or in every version of the catalog."""
        sets = [get_feature_set(name, version)] if version is not None else [
            get_feature_set(name, v) for v in catalog_versions(name)]
        if not sets:
            get_feature_set(name)  # raises NotFound naming the feature set
        deleted = self.writer.delete([self.layout(fs) for fs in sets], list(dict.fromkeys(user_ids)))
        return {"mode": "invalidate", "feature_set": name, "versions": [fs.version for fs in sets],
                "deleted": deleted, "done": True, "next": None}

    def drop_version(self, name: str, version: int, cursor: int = 0, force: bool = False,
                     budget_s: float | None = None, max_steps: int | None = None) -> dict[str, Any]:
        """Delete every vector of one version, a SCAN step at a time; resumable from ``cursor``."""
        fs = get_feature_set(name, version)
        if not force and self.versions.served(name) == version:
            raise Conflict(f"{name} v{version} is the served version; switch first, or pass force",
                           code="version_is_served")
        state = self.state(fs)
        state.forget_materialized()  # from the first step on, switching to it is refused
        budget = Budget(budget_s, max_steps)
        deleted = 0
        while budget.take():
            cursor, n = self.writer.drop_step(self.layout(fs), cursor, self.scan_count)
            deleted += n
            if cursor == 0:
                break
        done = cursor == 0
        log.info("version drop step", extra={"fields": {"event": "refresh_drop", "feature_set": name,
                                                        "version": version, "deleted": deleted, "done": done}})
        return {"mode": "invalidate", "feature_set": name, "version": version, "deleted": deleted, "done": done,
                "next": None if done else {"mode": "invalidate", "feature_set": name, "version": version,
                                           "cursor": cursor, "force": force}}

    def switch(self, name: str, version: int, force: bool = False) -> dict[str, Any]:
        """Serve ``version`` from now on (one SET); refused until a full run has materialized it."""
        fs = get_feature_set(name, version)
        record = self.state(fs).materialized()
        if record is None and not force:
            raise Conflict(f"{name} v{version} has not been fully materialized; run a full refresh of it first "
                           "(or pass force to serve it from misses)", code="version_not_materialized")
        previous = self.versions.switch(name, version)
        log.info("served version switched", extra={"fields": {"event": "refresh_switch", "feature_set": name,
                                                               "version": version, "previous": previous}})
        return {"mode": "switch", "feature_set": name, "version": version, "previous": previous,
                "materialized": record}

    def stats(self, name: str) -> dict[str, Any]:
        """Hit rate and refresh records per version, and the Redis server's memory."""
        out: dict[str, Any] = {"mode": "stats", "feature_set": name, "served": self._served(name).version,
                               "pointer": self.versions.pointer(name), "versions": {}}
        for v in catalog_versions(name):
            state = self.state(get_feature_set(name, v))
            counts = state.counters()
            hits, misses = counts.get("hits", 0), counts.get("misses", 0)
            out["versions"][str(v)] = {
                "hits": hits, "misses": misses,
                "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
                "materialized": state.materialized(), "incremental_since": state.since(),
                "full_refresh_running": state.holder(state.lock_key("full")),
            }
        out["redis"] = memory_info(self.writer.client)
        return out
