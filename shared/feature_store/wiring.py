"""Wiring: builds pools, stores and services once per function instance, on first use.

``services()`` returns the process-wide container; each attribute is built the first time a
request needs it (under the container's lock, so two threads never build it twice) and then
reused for the life of the instance. This is the one place that turns settings into objects:
services receive stores and a configuration of their own (``RefreshConfig``, the ETL section),
never the whole ``Settings``. ``reset()`` closes every pool and client the container built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import redis

from feature_store import logs
from feature_store.errors import SettingsError
from feature_store.services.access import AccessControl
from feature_store.services.audit import AuditRecorder, RecorderConfig, close_at_exit
from feature_store.services.breaker import CircuitBreaker
from feature_store.services.cache_admin import CacheAdmin
from feature_store.services.ingest import Ingestor
from feature_store.services.reader import Reader
from feature_store.services.refresh import RefreshConfig, Refresher
from feature_store.services.stats import FlushingHitCounter
from feature_store.services.versions import ServedVersions
from feature_store.settings import PostgresSettings, Settings
from feature_store.stores.api_clients import ApiClientStore
from feature_store.stores.bigquery_bulk import BigQueryBulkSource
from feature_store.stores.bigquery_changelog import BigQueryChangelog
from feature_store.stores.dialect import DIALECTS, Dialect
from feature_store.stores.ports import Changelog, Source
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.postgres_bulk import BulkSource
from feature_store.stores.redis_admin import RedisAdmin
from feature_store.stores.redis_online import KeyLayout, RedisOnlineStore
from feature_store.stores.redis_online_async import AsyncRedisReads
from feature_store.stores.redis_refresh import BulkWriter, RefreshState
from feature_store.stores.source import SourceStore

if TYPE_CHECKING:
    from feature_store.services.etl import Etl
    from feature_store.services.receipts import Receipts
    from feature_store.services.training import TrainingSets
    from feature_store.stores.bigquery_offline import OfflineStore

T = TypeVar("T")
Redis = redis.Redis  # the container has an attribute named redis, which hides the module in its annotations


class _Once(Generic[T]):
    """A container attribute built by ``build(container)`` on first access, under the container's lock."""

    def __init__(self, build: Callable[[Services], T]) -> None:
        self.build = build
        self.name = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Services]) -> _Once[T]: ...

    @overload
    def __get__(self, obj: Services, owner: type[Services]) -> T: ...

    def __get__(self, obj: Services | None, owner: type[Services]) -> _Once[T] | T:
        if obj is None:
            return self
        with obj._lock:
            if self.name not in obj.__dict__:  # after the first build, lookups never reach this method
                obj.__dict__[self.name] = self.build(obj)
        return obj.__dict__[self.name]  # type: ignore[no-any-return]


def once(build: Callable[[Services], T]) -> _Once[T]:
    return _Once(build)


class Services:
    """Everything one instance needs, each piece built on first access."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._closers: list[Callable[[], None]] = []
        self._extensions: dict[str, Any] = {}

    # --- the one factory of each kind of connection -------------------------------------------------

    def redis_client(self, timeout_ms: int, max_connections: int) -> Redis:
        """A Redis client with its own pool and read timeout; closed by ``close()``."""
        cfg = self.settings.require_redis()
        client = redis.Redis.from_url(cfg.url, socket_timeout=timeout_ms / 1000,
                                      socket_connect_timeout=cfg.connect_timeout_ms / 1000,
                                      max_connections=max_connections, health_check_interval=30)
        self._closers.append(client.close)
        return client

    def postgres_pool(self, settings: PostgresSettings, generic_plans: bool = False, bulk: bool = False,
                      application_name: str = "feature_store") -> PostgresPool:
        """A PostgreSQL pool; closed by ``close()``."""
        pool = PostgresPool(settings, generic_plans=generic_plans, bulk=bulk, application_name=application_name)
        self._closers.append(pool.close)
        return pool

    def shared(self, name: str, build: Callable[[], T]) -> T:
        """What an extension of the container (migration_wiring.py) builds once, under the container's lock."""
        with self._lock:
            if name not in self._extensions:
                self._extensions[name] = build()
            return self._extensions[name]  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close every pool and client built so far."""
        with self._lock:
            closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()

    # --- serving ------------------------------------------------------------------------------------

    @once
    def dialect(self) -> Dialect:
        return DIALECTS[self.settings.postgres.dialect]

    @once
    def layout(self) -> KeyLayout:
        return KeyLayout(self.settings.require_redis().key_prefix)

    @once
    def postgres(self) -> PostgresPool:
        """Point reads (read path and CDC): generic plans, short statements."""
        return self.postgres_pool(self.settings.postgres, generic_plans=True)

    @once
    def redis(self) -> Redis:
        """The online client: short timeouts, so a slow Redis degrades reads instead of stalling them."""
        cfg = self.settings.require_redis()
        return self.redis_client(cfg.socket_timeout_ms, cfg.max_connections)

    @once
    def online(self) -> RedisOnlineStore:
        cfg = self.settings.require_redis()
        return RedisOnlineStore(self.redis, self.layout, cfg.ttl_seconds, cfg.tombstone_ttl_seconds)

    @once
    def online_async(self) -> AsyncRedisReads:
        """The online store's reads awaited on an event loop (the async read functions)."""
        cfg = self.settings.require_redis()
        return AsyncRedisReads(cfg.url, self.layout, cfg.socket_timeout_ms / 1000, cfg.connect_timeout_ms / 1000,
                               cfg.max_connections)

    @once
    def serving_pool(self) -> ThreadPoolExecutor:
        """The async read functions' threads for what blocks: the source, write-backs, uncached credentials."""
        pool = ThreadPoolExecutor(self.settings.serving.pool_threads, thread_name_prefix="serving")
        self._closers.append(lambda: pool.shutdown(wait=False, cancel_futures=True))
        return pool

    @once
    def ingest_pool(self) -> Executor:
        """ingest_changes' threads when served async: each applies one message (Ingestor.handle) and waits for it."""
        from feature_store.thread_pool import FixedThreadPool

        pool = FixedThreadPool(self.settings.cdc.pool_threads, "ingest")
        self._closers.append(lambda: pool.shutdown(wait=False, cancel_futures=True))
        return pool

    @once
    def source(self) -> Source:
        from feature_store.migration_wiring import routed_source  # split by the migration's pointer, if any

        return routed_source(self, SourceStore(self.postgres, self.dialect))

    @once
    def versions(self) -> ServedVersions:
        """The served-version pointer as the read path sees it (cached per instance, FS_REFRESH_VERSION_CACHE_S)."""
        return ServedVersions(RedisAdmin(self.redis, self.layout), self.settings.refresh.version_cache_s)

    @once
    def reader(self) -> Reader:
        serving = self.settings.serving
        return Reader(self.online, self.source,
                      CircuitBreaker("redis", serving.breaker_failures, serving.breaker_reset_s,
                                     serving.breaker_min_failing_s,
                                     call_timeout_s=self.settings.require_redis().socket_timeout_ms / 1000),
                      CircuitBreaker("postgres", serving.breaker_failures, serving.breaker_reset_s,
                                     serving.breaker_min_failing_s),
                      counter=FlushingHitCounter(RedisAdmin(self.redis, self.layout),
                                                 self.settings.refresh.stats_flush_s),
                      rate_fail_open=self.settings.auth.rate_limit_fail_open, online_async=self.online_async,
                      last_resort_wait_s=self.settings.require_redis().last_resort_timeout_ms / 1000)

    @once
    def access(self) -> AccessControl:
        """Credentials to callers (services/access.py): keys and clients from PostgreSQL, cached in-process."""
        auth = self.settings.auth
        verifier = None
        if auth.google_audience or auth.google_platform_verified:
            from feature_store.stores.google_identity import GoogleTokenVerifier

            verifier = GoogleTokenVerifier(auth.google_audience, auth.google_certs_url,
                                           tuple(i.strip() for i in auth.google_issuers.split(",") if i.strip()),
                                           auth.google_platform_verified)
        return AccessControl(ApiClientStore(self.postgres), self.settings.key_pepper(), verifier,
                             auth.cache_s, auth.cache_entries)

    @once
    def audit(self) -> AuditRecorder | None:
        """The audit recorder of reads (None when FS_AUDIT_SINK=disabled); flushed when the process exits."""
        cfg = self.settings.audit
        if cfg.sink == "disabled":
            logs.get_logger(__name__).warning("the audit trail of reads is disabled (FS_AUDIT_SINK=disabled)")
            return None
        sink: Any
        if cfg.sink == "pubsub":
            from feature_store.stores.audit_sinks import PubSubAuditSink

            # the project first: without it the client would look for credentials and fail on those instead
            project = self._require_project("FS_PUBSUB_PROJECT", self.settings.pubsub.project, "FS_AUDIT_SINK")
            sink = PubSubAuditSink(self.pubsub_publisher, self.pubsub_publisher.topic_path(project, cfg.topic),
                                   cfg.publish_timeout_s)
        else:
            from feature_store.stores.audit_sinks import BigQueryAuditSink

            table = f"{self.bigquery.project}.{self.settings.bigquery.dataset}.{cfg.table}"
            sink = BigQueryAuditSink(self.bigquery, table, cfg.publish_timeout_s)
        recorder = AuditRecorder(sink, RecorderConfig(
            queue_rows=cfg.queue_rows, max_unsent_age_s=cfg.max_unsent_age_s, batch_rows=cfg.batch_rows,
            linger_s=cfg.linger_s, retry_backoff_s=cfg.retry_backoff_s, fail_closed=cfg.fail_closed,
            flush_on_exit_s=cfg.flush_on_exit_s))
        close_at_exit(recorder)
        self._closers.append(recorder.close)  # before the clients it publishes through (closed in reverse)
        return recorder

    @once
    def pubsub_publisher(self) -> Any:
        """google-cloud-pubsub's generated Publisher client, whose channel the audit trail and the changelog
        publish on (stores/pubsub_topic.py: their callers batch, one Publish RPC per batch)."""
        from google.pubsub_v1 import PublisherClient

        host = self.settings.pubsub.emulator_host
        if host:  # an emulator (or a test's stand-in) speaks plaintext gRPC
            import grpc
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            client = PublisherClient(transport=PublisherGrpcTransport(channel=grpc.insecure_channel(host)))
        else:
            client = PublisherClient()
        self._closers.append(client.transport.close)
        return client

    @staticmethod
    def _require_project(var: str, value: str | None, by: str) -> str:
        if not value:
            raise SettingsError([f"{var}: required by {by}=pubsub but not set"])
        return value

    # --- CDC ----------------------------------------------------------------------------------------

    @once
    def ingestor(self) -> Ingestor:
        """CDC ingestion: its own Redis client (write timeouts, not the read path's)."""
        cdc, cfg = self.settings.cdc, self.settings.require_redis()
        online = RedisOnlineStore(self.redis_client(cdc.redis_timeout_ms, cfg.max_connections), self.layout,
                                  cfg.ttl_seconds, cfg.tombstone_ttl_seconds)
        return Ingestor(online, self.source, self.changelog, cdc.decimal_handling_mode, cdc.max_batch,
                        cdc.max_inflight)

    @once
    def changelog(self) -> Changelog | None:
        """Where ingest_changes lands the changes offline (FS_CDC_CHANGELOG_SINK), None when disabled."""
        cdc = self.settings.cdc
        if not cdc.changelog_enabled:
            return None
        if cdc.changelog_sink == "pubsub":
            from feature_store.stores.pubsub_changelog import PubSubChangelog

            project = self._require_project("FS_PUBSUB_PROJECT", self.settings.pubsub.project, "FS_CDC_CHANGELOG_SINK")
            topic = self.pubsub_publisher.topic_path(project, cdc.changelog_topic)
            return PubSubChangelog(self.pubsub_publisher, topic, self.dialect, self.settings.bigquery.timeout_s)
        return BigQueryChangelog(self.bigquery, self.settings.bigquery.dataset, self.dialect,
                                 self.settings.bigquery.timeout_s)

    # --- bulk refresh and cache administration ------------------------------------------------------

    @once
    def bulk_postgres(self) -> PostgresPool:
        """Refresh's own pool: custom plans (a range plan depends on its bounds) and long statements."""
        r = self.settings.refresh
        return self.postgres_pool(self.settings.postgres.model_copy(update={
            "statement_timeout_ms": r.statement_timeout_ms, "pool_size": r.workers + 2}))

    @once
    def bulk_redis(self) -> Redis:
        """Refresh's own Redis client: long timeouts, since the online client's are deliberately short."""
        return self.redis_client(self.settings.refresh.redis_timeout_ms, self.settings.refresh.workers + 4)

    @once
    def refresh_state(self) -> RefreshState:
        return RefreshState(self.bulk_redis, self.layout, self.settings.refresh.run_ttl_s)

    @once
    def bulk_writer(self) -> BulkWriter:
        return BulkWriter(self.bulk_redis, self.layout, self.settings.refresh.write_batch)

    @once
    def admin_versions(self) -> ServedVersions:
        """The pointer as switching and dropping must see it: uncached."""
        return ServedVersions(RedisAdmin(self.bulk_redis, self.layout), 0.0)

    @once
    def cache_admin(self) -> CacheAdmin:
        return CacheAdmin(self.bulk_writer, self.refresh_state, self.admin_versions,
                          RedisAdmin(self.bulk_redis, self.layout))

    @once
    def refresher(self) -> Refresher:
        cfg, r = self.settings.require_redis(), self.settings.refresh
        config = RefreshConfig(chunk_users=r.chunk_users, workers=r.workers, lock_ttl_s=r.lock_ttl_s,
                               users_max=r.users_max, incremental_overlap_s=r.incremental_overlap_s,
                               progress_every_s=r.progress_every_s, ttl_s=cfg.ttl_seconds,
                               tombstone_ttl_s=cfg.tombstone_ttl_seconds)
        from feature_store.migration_wiring import routed_bulk  # split by the migration's pointer, if any

        bulk = routed_bulk(self, BulkSource(self.bulk_postgres, self.dialect, r.work_mem_mb))
        return Refresher(bulk, self.bulk_writer, self.refresh_state, self.admin_versions, config,
                         bigquery=lambda: BigQueryBulkSource(self.offline))

    # --- offline store (run_etl, fs-training): imported on first use, the read path never needs them --

    @once
    def bigquery(self) -> Any:
        """A google-cloud-bigquery client; anonymous against the local emulator's endpoint."""
        from google.cloud import bigquery

        cfg = self.settings.bigquery
        if cfg.api_endpoint:
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials

            client = bigquery.Client(project=cfg.project, credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                                     client_options=ClientOptions(api_endpoint=cfg.api_endpoint))
        else:
            client = bigquery.Client(project=cfg.project, location=cfg.location)
        self._closers.append(client.close)
        return client

    @once
    def offline(self) -> OfflineStore:
        """The BigQuery dataset of the offline store."""
        from feature_store.stores.bigquery_offline import OfflineStore

        bq, etl = self.settings.bigquery, self.settings.etl
        return OfflineStore(self.bigquery, bq.dataset, bq.location, bq.timeout_s, etl.job_timeout_s)

    @once
    def etl(self) -> Etl:
        """The ETL steps: their own small pool with custom plans (a keyset page plan depends on its bounds)."""
        from feature_store.services.etl import Etl
        from feature_store.stores.postgres_export import ExportSource

        etl = self.settings.etl
        pool = self.postgres_pool(self.settings.postgres.model_copy(update={
            "statement_timeout_ms": etl.statement_timeout_ms, "pool_size": 2}))
        return Etl(ExportSource(pool), self.offline, etl)

    @once
    def receipts(self) -> Receipts:
        """Decision receipts: the audit trail and the offline store, both in the BigQuery dataset."""
        from feature_store.services.receipts import Receipts
        from feature_store.stores.bigquery_audit import AuditTrail

        return Receipts(AuditTrail(self.offline, self.settings.audit.table))

    @once
    def training(self) -> TrainingSets:
        from feature_store.services.training import TrainingSets
        from feature_store.stores.bigquery_training import TrainingStore

        etl = self.settings.etl
        return TrainingSets(TrainingStore(self.offline, etl.tmp_dir), etl.feature_set, chunk=etl.feature_chunk)


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
    """Close everything the instance's services built and forget them (tests that change the environment)."""
    global _services
    with _services_lock:
        if _services is not None:
            _services.close()
        _services = None
