"""Administration of the online store: drop states, switch the served version, report hit rate and memory.

These are refresh_cache's modes that compute nothing from the source (``invalidate``, ``switch``,
``stats``); services/refresh.py's Refresher has the ones that do. Every version of a feature set
finishes its features from the same cached states (one layout, domain/state.py), so dropping a
version's states drops every version's, and a version is materialized when the layout is.
Keys and records are those of docs/redis-keys.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from feature_store.domain.catalog import get_feature_set
from feature_store.errors import Conflict
from feature_store.logs import get_logger
from feature_store.services.refresh_pipeline import Budget
from feature_store.services.versions import ServedVersions, catalog_versions
from feature_store.stores.redis_admin import RedisAdmin
from feature_store.stores.redis_refresh import BulkWriter, RefreshState

log = get_logger("feature_store.refresh")


class CacheAdmin:
    """Invalidation, version switching and statistics over the online store's Redis."""

    def __init__(self, writer: BulkWriter, state: RefreshState, versions: ServedVersions, admin: RedisAdmin,
                 scan_count: int = 1000) -> None:
        self.writer = writer
        self.state = state
        self.versions = versions
        self.admin = admin
        self.scan_count = scan_count

    def invalidate_users(self, name: str, user_ids: Sequence[str], version: int | None = None) -> dict[str, Any]:
        """Drop these users' cached states (shared by every version of the feature set)."""
        versions = shared_versions(name, version)
        deleted = self.writer.delete(list(dict.fromkeys(user_ids)))
        return {"mode": "invalidate", "feature_set": name, "versions": versions, "deleted": deleted, "done": True,
                "next": None}

    def drop_version(self, name: str, version: int, cursor: int = 0, force: bool = False,
                     budget_s: float | None = None, max_steps: int | None = None) -> dict[str, Any]:
        """Delete every cached state of the version's layout, a SCAN step at a time; resumable from ``cursor``.

        Refused without ``force`` while the served version uses the same layout (today every version
        does): its reads would all become misses.
        """
        get_feature_set(name, version)
        served = self.versions.served(name)
        if not force:
            raise Conflict(f"{name} v{version} shares its cached states with the served v{served} "
                           f"(layout {self.state.layout.layout}); dropping them makes every read a miss: pass force",
                           code="version_is_served")
        self.state.forget_materialized()  # from the first step on, switching is refused until a full run
        budget = Budget(budget_s, max_steps)
        deleted = 0
        while budget.take():
            cursor, n = self.writer.drop_step(self.state.layout, cursor, self.scan_count)
            deleted += n
            if cursor == 0:
                break
        done = cursor == 0
        log.info("layout drop step", extra={"fields": {"event": "refresh_drop", "feature_set": name,
                                                       "version": version, "deleted": deleted, "done": done}})
        return {"mode": "invalidate", "feature_set": name, "version": version, "deleted": deleted, "done": done,
                "next": None if done else {"mode": "invalidate", "feature_set": name, "version": version,
                                           "cursor": cursor, "force": force}}

    def switch(self, name: str, version: int, force: bool = False) -> dict[str, Any]:
        """Serve ``version`` from now on (one SET); refused until a full run has materialized its layout."""
        get_feature_set(name, version)
        record = self.state.materialized()
        if record is None and not force:
            raise Conflict(f"{name} v{version} has not been fully materialized; run a full refresh of it first "
                           "(or pass force to serve it from misses)", code="version_not_materialized")
        previous = self.versions.switch(name, version)
        log.info("served version switched", extra={"fields": {"event": "refresh_switch", "feature_set": name,
                                                               "version": version, "previous": previous}})
        return {"mode": "switch", "feature_set": name, "version": version, "previous": previous,
                "materialized": record}

    def stats(self, name: str) -> dict[str, Any]:
        """Hit rate per version, the refresh records of the layout they share, and the Redis server's memory."""
        served = get_feature_set(name, self.versions.served(name))
        materialized, since = self.state.materialized(), self.state.since()
        running = self.state.holder(self.state.lock_key("full"))
        out: dict[str, Any] = {"mode": "stats", "feature_set": name, "served": served.version,
                               "pointer": self.versions.pointer(name), "layout": self.state.layout.layout,
                               "versions": {}}
        for v in catalog_versions(name):
            counts = self.admin.hits(name, v)
            hits, misses = counts["hits"], counts["misses"]
            out["versions"][str(v)] = {
                "hits": hits, "misses": misses, "undecodable": counts["undecodable"],
                "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
                "materialized": materialized, "incremental_since": since, "full_refresh_running": running,
            }
        out["redis"] = self.admin.memory()
        return out


def shared_versions(name: str, version: int | None) -> list[int]:
    """The versions a write to the cached states reaches: every version of the set (they share one layout).

    ``version``, when given, is checked to exist (NotFound otherwise), as is the feature set.
    """
    get_feature_set(name, version)
    return catalog_versions(name)
