"""Wiring of the migration: pools to the target, its stores and services, built once per instance on first use.

``migration_services()`` extends the instance's ``wiring.services()`` (same settings, Redis and source
pools) with what the migration adds; ``routed_source`` and ``routed_bulk`` are what wiring.py calls to
wrap the read path's and the refresh's sources when a migration target is configured. Connections that
write to either database say ``application_name = fs_replicator``, which the touch triggers respect
(sql/postgres/0005_replication_sessions.sql).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TypeVar, cast

from feature_store.domain.changes import Change
from feature_store.domain.migration_hash import to_target
from feature_store.errors import SettingsError
from feature_store.services.ingest import Ingestor
from feature_store.services.migration.guard import Guard, ShadowReader
from feature_store.services.migration.phases import PhaseConfig, Phases
from feature_store.services.migration.replicator import Replicator
from feature_store.services.migration.shift import Shifter
from feature_store.services.migration.verify import Side
from feature_store.settings import PostgresSettings, env_var
from feature_store.stores.dialect import DIALECTS, Dialect
from feature_store.stores.migration_replica import ReplicaStore
from feature_store.stores.migration_routing import RoutingStore
from feature_store.stores.migration_source import RoutingBulkSource, RoutingSource
from feature_store.stores.migration_state import StateStore
from feature_store.stores.ports import Source
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_bulk import BulkSource
from feature_store.stores.redis_online import RedisOnlineStore
from feature_store.stores.source import SourceStore
from feature_store.wiring import Services, services

REPLICATOR = "fs_replicator"
T = TypeVar("T")


class MigrationServices:
    """What the migration adds to an instance, each piece built on first access.

    Every piece is kept in the ``Services`` container it extends (``Services.shared``), so one container
    has one set of migration pools, built under its lock and closed by its ``close()``.
    """

    def __init__(self, base: Services) -> None:
        self.base = base
        self.settings = base.settings

    def _once(self, name: str, build: Callable[[], T]) -> T:
        return self.base.shared(f"migration:{name}", build)

    def _writer_pool(self, name: str, settings: PostgresSettings) -> PostgresPool:
        """A pool whose sessions say ``fs_replicator`` (the touch triggers keep what they write)."""
        return self._once(name, lambda: self.base.postgres_pool(settings, application_name=REPLICATOR))

    @cached_property
    def target_settings(self) -> PostgresSettings:
        target = self.settings.migration_target()
        if target is None:
            raise SettingsError([f"{env_var('migration', 'target_host')}: required by the migration but not set"])
        return target

    @cached_property
    def target_dialect(self) -> Dialect:
        return DIALECTS[self.target_settings.dialect]

    def _long(self, settings: PostgresSettings) -> PostgresSettings:
        return settings.model_copy(update={"statement_timeout_ms": self.settings.migration.statement_timeout_ms,
                                           "pool_size": 4})

    @cached_property
    def target_writes(self) -> PostgresPool:
        """Replication batches into the target: short statements, as many connections as configured."""
        return self._writer_pool("target_writes", self.target_settings)

    @cached_property
    def target_phases(self) -> PostgresPool:
        """Backfill, verification and the phases' bookkeeping in the target: long statements."""
        return self._writer_pool("target_phases", self._long(self.target_settings))

    @cached_property
    def source_phases(self) -> PostgresPool:
        """Chunk reads of the source, and reverse replication and repairs into it."""
        return self._writer_pool("source_phases", self._long(self.settings.postgres))

    @cached_property
    def target_reads(self) -> SourceStore:
        """User states read from the target (the read path's target side)."""
        pool = self._once("target_read_pool", lambda: self.base.postgres_pool(self.target_settings, generic_plans=True))
        return self._once("target_reads", lambda: SourceStore(pool, self.target_dialect))

    @cached_property
    def state(self) -> StateStore:
        return self._once("state", lambda: StateStore(self.target_phases))

    @cached_property
    def routing(self) -> RoutingStore:
        """The pointer as readers see it: the read path's Redis client (short timeouts; unreadable = keep last)."""
        cfg = self.settings.require_redis()
        return self._once("routing", lambda: RoutingStore(
            self.base.redis, cfg.key_prefix, self.settings.migration.routing_cache_s))

    @cached_property
    def guard(self) -> Guard:
        """The traffic shift's guard; routed_source gives it its shadow reader."""
        m = self.settings.migration
        return self._once("guard", lambda: Guard(
            self.routing, m.guard_error_rate, m.guard_p95_ms, m.guard_min_reads))

    @cached_property
    def replicator(self) -> Replicator:
        m, cdc = self.settings.migration, self.settings.cdc

        def build() -> Replicator:
            source_writes = self._writer_pool("source_writes", self.settings.postgres)
            return Replicator(self.state.read, ReplicaStore(self.target_writes, self.target_dialect),
                              ReplicaStore(source_writes, self.base.dialect), recompute=self.recompute,
                              decimals=cdc.decimal_handling_mode, cache_s=m.routing_cache_s)

        return self._once("replicator", build)

    @cached_property
    def recompute_ingestor(self) -> Ingestor:
        """Recomputes users after their change reached the target (no changelog: ingest_changes lands it)."""
        cfg, cdc = self.settings.require_redis(), self.settings.cdc
        online = RedisOnlineStore(self.base.bulk_redis, self.base.layout, cfg.ttl_seconds, cfg.tombstone_ttl_seconds)
        return self._once("recompute_ingestor", lambda: Ingestor(
            online, self.base.source, None, cdc.decimal_handling_mode, cdc.max_batch))

    def recompute(self, changes: Sequence[Change], message_id: str) -> None:
        route = self.routing.route()
        if not route.active:
            return
        routed = [c for c in changes if route.truth == "target" or any(to_target(u, route.percent) for u in c.user_ids)]
        if routed:
            self.recompute_ingestor.apply(routed, message_id)

    @cached_property
    def phases(self) -> Phases:
        m, cfg = self.settings.migration, self.settings.require_redis()

        def build() -> Phases:
            routing = RoutingStore(self.base.bulk_redis, cfg.key_prefix, 0.0)
            settle = 2 * m.routing_cache_s + 0.5
            shifter = Shifter(routing, self.state, self.base.bulk_redis, [self.base.layout.user_pattern()], settle)
            return Phases(Side(self.source_phases, self.base.dialect), Side(self.target_phases, self.target_dialect),
                          self.state, ReplicaStore(self.target_phases, self.target_dialect),
                          ReplicaStore(self.source_phases, self.base.dialect), shifter, routing,
                          PhaseConfig(m.step_budget_s, m.chunk_rows, m.backfill_workers, m.recheck_attempts,
                                      m.recheck_delay_s, m.cutover_quiet_s, settle, m.verify_workers))

        return self._once("phases", build)


def migration_for(base: Services) -> MigrationServices:
    """The migration services of ``base`` (one per Services container)."""
    return base.shared("migration:services", lambda: MigrationServices(base))


def migration_services() -> MigrationServices:
    """The instance's migration services, over ``wiring.services()``."""
    return migration_for(services())


def configured(base: Services) -> bool:
    return base.settings.migration.target_host is not None


def routed_source(base: Services, source: SourceStore) -> Source:
    """``source``, or a RoutingSource over it and the target when a migration target is configured."""
    if not configured(base):
        return source
    migration = migration_for(base)
    m = base.settings.migration
    guard = migration.guard
    if guard.shadow is None:
        guard.shadow = ShadowReader(source, migration.target_reads, guard, m.shadow_sample, m.recheck_delay_s,
                                    m.recheck_attempts)
    return RoutingSource(source, migration.target_reads, migration.routing, guard)


def routed_bulk(base: Services, bulk: BulkSource) -> BulkSource:
    """``bulk``, or a RoutingBulkSource over it and the target's when a migration target is configured."""
    if not configured(base):
        return bulk
    migration = migration_for(base)
    target = BulkSource(base.postgres_pool(migration.target_settings.model_copy(update={
        "statement_timeout_ms": base.settings.refresh.statement_timeout_ms,
        "pool_size": base.settings.refresh.workers + 2})), migration.target_dialect, base.settings.refresh.work_mem_mb)
    return cast(BulkSource, RoutingBulkSource(bulk, target, migration.routing))
