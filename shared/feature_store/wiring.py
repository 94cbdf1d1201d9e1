"""Wiring: builds pools, stores and services once per function instance, on first use.

``services()`` returns the process-wide container; every attribute is built lazily under a
lock the first time a request needs it and then reused for the life of the instance.
Services receive stores, never settings.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import redis

from feature_store import logs
from feature_store.domain.catalog import CATALOG, FeatureSet
from feature_store.services.breaker import CircuitBreaker
from feature_store.services.ingest import Ingestor
from feature_store.services.reader import Reader
from feature_store.services.refresh import RefreshConfig, Refresher
from feature_store.services.stats import FlushingHitCounter
from feature_store.services.versions import ServedVersions
from feature_store.settings import Settings
from feature_store.stores.bigquery_bulk import BigQueryBulkSource
from feature_store.stores.bigquery_changelog import BigQueryChangelog
from feature_store.stores.dialect import DIALECTS, Dialect
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_bulk import BulkSource
from feature_store.stores.redis_online import KeyLayout, RedisOnlineStore
from feature_store.stores.redis_refresh import BulkWriter
from feature_store.stores.source import SourceStore

if TYPE_CHECKING:
    from feature_store.services.etl import Etl
    from feature_store.services.training import TrainingSets
    from feature_store.stores.bigquery_offline import OfflineStore

# The class below has a property named redis, which hides the module in its annotations.
BulkRedis = redis.Redis


class Services:
    """Everything one instance needs, each piece built on first access."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._online_stores: dict[tuple[str, int], RedisOnlineStore] = {}

    def _once(self, name: str, build: Any) -> Any:
        with self._lock:
            if name not in self.__dict__:
                self.__dict__[name] = build()
            return self.__dict__[name]

    @cached_property
    def dialect(self) -> Dialect:
        return DIALECTS[self.settings.postgres.dialect]

    @cached_property
    def postgres(self) -> PostgresPool:
        return self._once("postgres", lambda: PostgresPool(self.settings.postgres, generic_plans=True))  # type: ignore[no-any-return]

    @cached_property
    def redis(self) -> redis.Redis:
        """The online client: short timeouts, so a slow Redis degrades reads instead of stalling them."""
        cfg = self.settings.require_redis()
        return self._once("redis", lambda: redis.Redis.from_url(  # type: ignore[no-any-return]
            cfg.url,
            socket_timeout=cfg.socket_timeout_ms / 1000,
            socket_connect_timeout=cfg.connect_timeout_ms / 1000,
            max_connections=cfg.max_connections,
            health_check_interval=30,
        ))

    def online_store(self, feature_set: FeatureSet) -> RedisOnlineStore:
        key = (feature_set.name, feature_set.version)
        store = self._online_stores.get(key)
        if store is None:
            cfg = self.settings.require_redis()
            with self._lock:
                store = self._online_stores.get(key) or RedisOnlineStore(
                    self.redis, KeyLayout(cfg.key_prefix, feature_set.name, feature_set.version),
                    cfg.ttl_seconds, cfg.tombstone_ttl_seconds)
                self._online_stores[key] = store
        return store

    @cached_property
    def bigquery(self) -> Any:
        """A google-cloud-bigquery client; anonymous against the local emulator's endpoint."""
        cfg = self.settings.bigquery

        def build() -> Any:
            from google.cloud import bigquery

            if cfg.api_endpoint:
                from google.api_core.client_options import ClientOptions
                from google.auth.credentials import AnonymousCredentials

                return bigquery.Client(project=cfg.project, credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                                       client_options=ClientOptions(api_endpoint=cfg.api_endpoint))
            return bigquery.Client(project=cfg.project, location=cfg.location)

        return self._once("bigquery", build)

    @cached_property
    def source(self) -> SourceStore:
        return self._once("source", lambda: SourceStore(self.postgres, self.dialect))  # type: ignore[no-any-return]

    @cached_property
    def reader(self) -> Reader:
        serving = self.settings.serving
        return self._once("reader", lambda: Reader(  # type: ignore[no-any-return]
            self.online_store, self.source,
            CircuitBreaker("redis", serving.breaker_failures, serving.breaker_reset_s, serving.breaker_min_failing_s,
                           call_timeout_s=self.settings.require_redis().socket_timeout_ms / 1000),
            CircuitBreaker("postgres", serving.breaker_failures, serving.breaker_reset_s,
                           serving.breaker_min_failing_s),
            counter=FlushingHitCounter(self.redis, self.settings.require_redis().key_prefix,
                                       self.settings.refresh.stats_flush_s),
        ))

    @cached_property
    def versions(self) -> ServedVersions:
        """The served-version pointer as the read path sees it (cached per instance, FS_REFRESH_VERSION_CACHE_S)."""
        prefix, cache_s = self.settings.require_redis().key_prefix, self.settings.refresh.version_cache_s
        return self._once("versions", lambda: ServedVersions(self.redis, prefix, cache_s))  # type: ignore[no-any-return]

    @cached_property
    def bulk_postgres(self) -> PostgresPool:
        """Refresh's own pool: custom plans (a range plan depends on its bounds) and long statements."""
        r = self.settings.refresh
        cfg = self.settings.postgres.model_copy(update={"statement_timeout_ms": r.statement_timeout_ms,
                                                        "pool_size": r.workers + 2})
        return self._once("bulk_postgres", lambda: PostgresPool(cfg))  # type: ignore[no-any-return]

    @cached_property
    def bulk_redis(self) -> BulkRedis:
        """Refresh's own Redis client: long timeouts, since the online client's are deliberately short."""
        cfg, r = self.settings.require_redis(), self.settings.refresh
        return self._once("bulk_redis", lambda: redis.Redis.from_url(  # type: ignore[no-any-return]
            cfg.url, socket_timeout=r.redis_timeout_ms / 1000, socket_connect_timeout=cfg.connect_timeout_ms / 1000,
            max_connections=r.workers + 4, health_check_interval=30))

    @cached_property
    def refresher(self) -> Refresher:
        cfg, r = self.settings.require_redis(), self.settings.refresh

        def build() -> Refresher:
            config = RefreshConfig(chunk_users=r.chunk_users, workers=r.workers, lock_ttl_s=r.lock_ttl_s,
                                   users_max=r.users_max, incremental_overlap_s=r.incremental_overlap_s,
                                   progress_every_s=r.progress_every_s, ttl_s=cfg.ttl_seconds,
                                   tombstone_ttl_s=cfg.tombstone_ttl_seconds)
            # Its own pointer view, uncached: switching and dropping must see the pointer as it is.
            versions = ServedVersions(self.bulk_redis, cfg.key_prefix, 0.0)
            return Refresher(BulkSource(self.bulk_postgres, self.dialect, r.work_mem_mb),
                             BulkWriter(self.bulk_redis, r.write_batch), versions, cfg.key_prefix, config, r.run_ttl_s,
                             bigquery=lambda: BigQueryBulkSource(self.offline))

        return self._once("refresher", build)  # type: ignore[no-any-return]

    @cached_property
    def ingestor(self) -> Ingestor:
        """CDC ingestion: its own Redis client (write timeouts, not the read path's), every served feature set."""
        cdc, cfg = self.settings.cdc, self.settings.require_redis()

        def build() -> Ingestor:
            client = redis.Redis.from_url(cfg.url, socket_timeout=cdc.redis_timeout_ms / 1000,
                                          socket_connect_timeout=cfg.connect_timeout_ms / 1000,
                                          max_connections=cfg.max_connections, health_check_interval=30)
            stores = [RedisOnlineStore(client, KeyLayout(cfg.key_prefix, fs.name, fs.version),
                                       cfg.ttl_seconds, cfg.tombstone_ttl_seconds) for fs in CATALOG.values()]
            changelog = (BigQueryChangelog(self.bigquery, self.settings.bigquery.dataset, self.dialect,
                                           self.settings.bigquery.timeout_s) if cdc.changelog_enabled else None)
            return Ingestor(stores, self.source, changelog, cdc.decimal_handling_mode, cdc.max_batch,
                            cdc.max_inflight)

        return self._once("ingestor", build)  # type: ignore[no-any-return]

    # --- offline store (run_etl, fs-training): imported on first use, the read path never needs them

    @cached_property
    def offline(self) -> OfflineStore:
        """The BigQuery dataset of the offline store."""
        from feature_store.stores.bigquery_offline import OfflineStore

        bq, etl = self.settings.bigquery, self.settings.etl
        return self._once("offline", lambda: OfflineStore(  # type: ignore[no-any-return]
            self.bigquery, bq.dataset, bq.location, bq.timeout_s, etl.job_timeout_s))

    @cached_property
    def etl(self) -> Etl:
        """The ETL steps: their own small pool with custom plans (a keyset page plan depends on its bounds)."""
        from feature_store.services.etl import Etl

        etl = self.settings.etl
        cfg = self.settings.postgres.model_copy(update={"statement_timeout_ms": etl.statement_timeout_ms,
                                                        "pool_size": 2})
        return self._once("etl", lambda: Etl(PostgresPool(cfg), self.offline, etl))  # type: ignore[no-any-return]

    @cached_property
    def training(self) -> TrainingSets:
        from feature_store.services.training import TrainingSets

        etl = self.settings.etl
        return self._once("training", lambda: TrainingSets(  # type: ignore[no-any-return]
            self.offline, etl.feature_set, tmp_dir=etl.tmp_dir, chunk=etl.feature_chunk))


_services: Services | None = None
_services_lock = threading.Lock()


def services(environ: Mapping[str, str] | None = None) -> Services:
    """The instance's services, built from the environment on first call."""
    global _services
    if _services is None:
        with _services_lock:
            if _services is None:
                settings = Settings.from_env(environ)
                logs.configure(settings.log_level)
                _services = Services(settings)
    return _services


def reset() -> None:
    """Forget the instance's services (tests that change the environment)."""
    global _services
    with _services_lock:
        for name in ("postgres", "bulk_postgres"):
            pool = _services.__dict__.get(name) if _services is not None else None
            if pool is not None:
                pool.close()
        _services = None
