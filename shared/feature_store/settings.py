"""Settings: the one place that reads the environment.

Every variable is ``FS_<SECTION>_<FIELD>`` (for example ``FS_POSTGRES_HOST``), plus the
standard ``PUBSUB_EMULATOR_HOST`` of Google's client libraries. ``Settings.from_env`` reads
a mapping once (``os.environ`` by default) and reports every bad variable by name.
There are no silent localhost defaults: the local stack (emulators/) supplies local values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from feature_store.errors import SettingsError

PREFIX = "FS_"
# Stored key hashes made with this are worthless outside a development stack (settings refuse it deployed).
DEVELOPMENT_PEPPER = b"fs-development-pepper-not-for-production"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostgresSettings(_Section):
    """The source of truth: PostgreSQL (direct or Cloud SQL connector) or CockroachDB."""

    host: str | None = None
    port: int = Field(5432, ge=1, le=65535)
    database: str = "feature_store"
    user: str = "postgres"
    password: SecretStr | None = None
    # "project:region:instance": connect through cloud-sql-python-connector instead of host/port.
    instance_connection_name: str | None = Field(None, pattern=r"^[a-z0-9-]+:[a-z0-9-]+:[a-z0-9-]+$")
    # Which address of the Cloud SQL instance the connector dials: private inside the VPC (production).
    ip_type: Literal["private", "public", "psc"] = "private"
    dialect: Literal["postgresql", "cockroachdb"] = "postgresql"
    ssl: bool = False
    pool_size: int = Field(8, ge=1, le=256)
    connect_timeout_s: float = Field(5.0, gt=0)
    statement_timeout_ms: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _one_way_to_connect(self) -> PostgresSettings:
        if self.host is None and self.instance_connection_name is None:
            raise ValueError("neither FS_POSTGRES_HOST nor FS_POSTGRES_INSTANCE_CONNECTION_NAME is set")
        return self


class RedisSettings(_Section):
    """The online store: Memorystore for Redis (or any Redis 6+)."""

    url: str = Field(pattern=r"^(redis|rediss|unix)://")
    # Reads slower than this fall back to PostgreSQL and are marked degraded.
    socket_timeout_ms: int = Field(10, ge=1)
    # ...but when the source cannot answer either, the reader's last read of Redis waits this long for it:
    # with no other answer left, a slow reply (a saturated machine, Redis starved of CPU) beats a 503.
    last_resort_timeout_ms: int = Field(100, ge=1)
    connect_timeout_ms: int = Field(200, ge=1)
    max_connections: int = Field(64, ge=1)
    ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    tombstone_ttl_seconds: int = Field(24 * 3600, ge=60)
    key_prefix: str = Field("fs", pattern=r"^[a-z][a-z0-9_]{0,15}$")


class BigQuerySettings(_Section):
    """The offline store."""

    project: str | None = None
    dataset: str = Field("feature_store", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
    location: str = "US"
    # http://127.0.0.1:9050 for the local emulator; unset in production.
    api_endpoint: str | None = None
    timeout_s: float = Field(30.0, gt=0)


class PubSubSettings(_Section):
    """Change events arrive through Pub/Sub."""

    project: str | None = None
    topic: str = "cdc-changes"
    emulator_host: str | None = None


class ServingSettings(_Section):
    """Online read path."""

    feature_set: str = "credit_decision"
    batch_max: int = Field(1000, ge=1, le=10000)
    breaker_failures: int = Field(5, ge=1)
    # ...failing for at least this long with no success in between: a burst is not an outage.
    breaker_min_failing_s: float = Field(1.0, ge=0)
    breaker_reset_s: float = Field(5.0, gt=0)
    # async: the read functions answer on an event loop (functions-framework's ASGI mode; docs/serving.md,
    # "Async serving"); threaded: on gunicorn's threads, as every other function. Read when the function loads.
    mode: Literal["async", "threaded"] = "async"
    # The async path's pool: what cannot run on the event loop (misses, write-backs, uncached credentials).
    pool_threads: int = Field(8, ge=1, le=64)


class AuditSettings(_Section):
    """The audit trail of reads (docs/security.md, "Audit trail and receipts")."""

    # pubsub: the topic a BigQuery subscription writes to audit_reads (production); bigquery: rows streamed
    # straight into audit_reads (the local stack's stand-in for that subscription); disabled: no trail at all
    # (tests of other parts; logged as a warning by every instance that serves reads).
    sink: Literal["pubsub", "bigquery", "disabled"] = "pubsub"
    topic: str = Field("audit-reads", pattern=r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")
    table: str = Field("audit_reads", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")
    # Refuse reads (503 audit_unavailable) while records cannot be kept; false: serve, count and log loudly.
    fail_closed: bool = True
    # Rows (one per user of a read) waiting for the sink at most; the oldest unsent one at most this old.
    queue_rows: int = Field(100_000, ge=100)
    max_unsent_age_s: float = Field(10.0, gt=0)
    # Rows per publish call, how long a row may wait to fill one, and the pause after a failed call.
    batch_rows: int = Field(500, ge=1, le=10_000)
    linger_s: float = Field(0.05, ge=0)
    retry_backoff_s: float = Field(0.5, gt=0)
    publish_timeout_s: float = Field(10.0, gt=0)
    # On exit (SIGTERM, then atexit) what is queued is sent for at most this long.
    flush_on_exit_s: float = Field(5.0, ge=0)


class AuthSettings(_Section):
    """Who may read (docs/security.md): API keys, Google identities, their cache and the rate limiter's failure mode.

    ``key_pepper`` keys the HMAC that API key secrets are stored under (Secret Manager in production).
    Without it only ``development`` may run, on a fixed development pepper; a deployed instance
    (Cloud Run and Cloud Functions set ``K_SERVICE``) refuses ``development`` outright.
    """

    key_pepper: SecretStr | None = None
    development: bool = False
    # A resolved key or token is trusted this long: revocation takes effect within it. When PostgreSQL
    # cannot be read, an entry past its time keeps serving (last good) rather than failing the read.
    cache_s: float = Field(10.0, ge=0, le=300)
    cache_entries: int = Field(10_000, ge=1)
    # Google ID tokens: the audience they must be minted for (the service URL), and whether the platform
    # (Cloud Run / Cloud Functions IAM) has verified them already, so only their claims are read here.
    google_audience: str | None = None
    google_platform_verified: bool = False
    google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    google_issuers: str = "https://accounts.google.com,accounts.google.com"  # comma-separated
    # The limiter cannot be asked when Redis fails: serve anyway (counted, alerted) or refuse with a 503.
    rate_limit_fail_open: bool = True


class CdcSettings(_Section):
    """Change data capture: the ingest_changes function and the local relay (emulators/cdc_relay.py)."""

    # Land every change in BigQuery's changelog_<table> as well as refreshing Redis.
    changelog_enabled: bool = True
    # pubsub: publish each change's row to changelog_topic, which one BigQuery subscription per table
    # writes (production: terraform sets it; stores/pubsub_changelog.py); bigquery: stream the rows into
    # the tables (insertAll: the local stack, which has no Pub/Sub, and the BigQuery emulator's tests).
    # Either sink's call has FS_BIGQUERY_TIMEOUT_S as its deadline; past it the changes are redelivered.
    changelog_sink: Literal["bigquery", "pubsub"] = "bigquery"
    changelog_topic: str = Field("cdc-changelog", pattern=r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")
    # Debezium's decimal.handling.mode: how a NUMERIC string is read when a message has no schema part.
    decimal_handling_mode: Literal["precise", "string", "double"] = "precise"
    # Messages applied together by one instance (one source query, one Redis pipeline, one insert per table).
    max_batch: int = Field(256, ge=1, le=5000)
    # Batches applied side by side by one instance (each holds a PostgreSQL connection while it runs);
    # one at a time makes bigger batches, cheaper per user at the source (bench/ingest.py).
    max_inflight: int = Field(1, ge=1, le=64)
    # Writes may take longer than the read path's short timeout; a timeout still means redelivery.
    redis_timeout_ms: int = Field(2000, ge=1)
    # The relay: replication slot, push endpoint (the ingest function), polling and delivery.
    slot: str = Field("fs_cdc", pattern=r"^[a-z0-9_]{1,63}$")
    target_url: str | None = Field(None, pattern=r"^https?://")
    server_name: str = Field("fs", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # Debezium's topic.prefix (source.name)
    poll_interval_ms: int = Field(20, ge=1, le=60000)
    max_changes: int = Field(2000, ge=1)
    concurrency: int = Field(16, ge=1, le=256)
    include_schema: bool = False  # the JSON converter's schemas.enable
    # threaded: ingest_changes on gunicorn's threads, the CloudEvent made by functions-framework (Flask);
    # async: on an event loop (functions-framework's ASGI mode), the push parsed by transports/pushed.py and
    # each message applied on the instance's ingest pool. Read when the function loads (docs/cdc.md: async
    # is the default since 2026-12-03, measured on an idle machine at 1.4-1.8x threaded's rate, lag lower).
    serving_mode: Literal["async", "threaded"] = "async"
    # The async mode's pool: each message waits on one of its threads until its batch (and changelog) is
    # done, so this bounds the messages a worker has in flight, as gunicorn's THREADS does threaded.
    pool_threads: int = Field(32, ge=1, le=256)


class EtlSettings(_Section):
    """The offline store's ETL (run_etl): incremental export to BigQuery, daily snapshot, training sets."""

    # Rows per PostgreSQL read (keyset page) and per BigQuery load + MERGE (the watermark advances after each).
    chunk_rows: int = Field(20_000, ge=100, le=1_000_000)
    batch_rows: int = Field(500_000, ge=100, le=50_000_000)
    # Each run re-reads this much before the watermark, so a row committed late with an older
    # timestamp is still exported (the MERGE makes the re-read harmless).
    overlap_s: int = Field(600, ge=0)
    # An export call starts no new batch after this long; the workflow calls again until done.
    step_budget_s: float = Field(600.0, gt=0)
    statement_timeout_ms: int = Field(120_000, ge=1)
    job_timeout_s: float = Field(3600.0, gt=0)  # the longest wait for one BigQuery job (load, MERGE, snapshot)
    # Users (snapshot) or label rows (training set) per BigQuery feature statement: bounds its memory
    # (the emulator held 20 GB for 1M users in one statement; BigQuery itself takes far more).
    feature_chunk: int = Field(50_000, ge=1)
    feature_set: str = "credit_decision"
    feature_set_version: int | None = Field(None, ge=1)  # None: the newest version in the catalog
    tmp_dir: str | None = None  # where export files are staged (default: the system's temp folder)


class RefreshSettings(_Section):
    """Bulk cache refresh: functions/refresh_cache and fs-refresh (docs/capacity.md explains the defaults)."""

    # Users per source statement; the best rate on 2 cores was 5,000 (bench/refresh.py).
    chunk_users: int = Field(5000, ge=1, le=100_000)
    # Source statements computing at once while the previous chunk is written to Redis.
    workers: int = Field(2, ge=1, le=16)
    # Keys per compare-and-set script call: bounds how long one call holds Redis (~1 ms per 500).
    write_batch: int = Field(500, ge=1, le=10_000)
    # One HTTP invocation stops taking chunks after this long (the function timeout is 300 s).
    budget_s: float = Field(240.0, gt=0)
    lock_ttl_s: int = Field(120, ge=1)
    # A resumable run's checkpoint never expires (volatile-lru cannot evict it); finished or replaced runs
    # are kept this long for operators.
    run_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    statement_timeout_ms: int = Field(300_000, ge=1000)
    # A chunk's sorts and aggregates stay in memory (the default 4 MB spills a 5,000-user chunk to disk).
    work_mem_mb: int = Field(32, ge=1, le=2048)
    redis_timeout_ms: int = Field(30_000, ge=100)
    users_max: int = Field(10_000, ge=1, le=100_000)
    # Incremental passes overlap by this much: a transaction may commit after a later one started.
    incremental_overlap_s: int = Field(60, ge=0)
    progress_every_s: float = Field(10.0, gt=0)
    # The read path: how long the served-version pointer is cached, how often hit counts are flushed.
    version_cache_s: float = Field(1.0, ge=0)
    stats_flush_s: float = Field(5.0, ge=0)


class MigrationSettings(_Section):
    """The move of the source of truth to CockroachDB (docs/migration.md): the target and each phase's tuning.

    Unset ``target_host``: no migration is configured, and reads never consult a routing pointer.
    """

    target_host: str | None = None
    target_port: int = Field(26257, ge=1, le=65535)
    target_database: str = "feature_store"
    target_user: str = "feature_store"
    target_password: SecretStr | None = None
    # cockroachdb in production; tests and the local stack use a second PostgreSQL database.
    target_dialect: Literal["postgresql", "cockroachdb"] = "cockroachdb"
    target_ssl: bool = False
    target_pool_size: int = Field(4, ge=1, le=256)
    # Rows per keyset chunk of the backfill and of the verification (one COPY and one checksum each).
    chunk_rows: int = Field(50_000, ge=100, le=1_000_000)
    # Tables the backfill copies side by side (each reads its next chunk while the current one lands).
    backfill_workers: int = Field(2, ge=1, le=8)
    # Chunks a verification compares at once, each summed on both sides together: at most 3, since the
    # phases' pools hold 4 connections a side and the next chunk's bound needs one.
    verify_workers: int = Field(2, ge=1, le=3)
    # One run_migration call stops starting chunks after this long; the workflow calls again.
    step_budget_s: float = Field(240.0, gt=0)
    statement_timeout_ms: int = Field(300_000, ge=1000)
    # A chunk (or a shadow read) that differs is read again this many times, this far apart, before it
    # counts as different: rows written while it was read reach the other side within the lag.
    recheck_attempts: int = Field(3, ge=0, le=20)
    recheck_delay_s: float = Field(2.0, ge=0)
    # The cutover waits for the replication to have applied every change for this long (lag zero).
    cutover_quiet_s: float = Field(3.0, ge=0)
    # Changes applied together by one replicate_changes instance (one transaction on the target).
    max_batch: int = Field(500, ge=1, le=5000)
    # How long an instance trusts its copy of the routing pointer (percentage, source of truth).
    routing_cache_s: float = Field(1.0, ge=0)
    # Share of routed reads also read from the other database and compared (0..1).
    shadow_sample: float = Field(0.05, ge=0, le=1)
    # The guard rolls the percentage back when, once a step has seen guard_min_reads target reads, the
    # target's error rate or p95 latency passes these, or on any confirmed vector mismatch.
    guard_error_rate: float = Field(0.01, ge=0, le=1)
    guard_p95_ms: float = Field(50.0, gt=0)
    guard_min_reads: int = Field(50, ge=1)


class Settings(BaseModel):
    """All configuration of one function instance or CLI run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    postgres: PostgresSettings
    redis: RedisSettings | None = None  # required by the online paths: see require_redis()
    bigquery: BigQuerySettings = BigQuerySettings()
    pubsub: PubSubSettings = PubSubSettings()
    serving: ServingSettings = ServingSettings()
    audit: AuditSettings = AuditSettings()
    auth: AuthSettings = AuthSettings()
    cdc: CdcSettings = CdcSettings()
    refresh: RefreshSettings = RefreshSettings()
    etl: EtlSettings = EtlSettings()
    migration: MigrationSettings = MigrationSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    deployed: bool = False  # K_SERVICE is set: running on Cloud Run or Cloud Functions

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``FS_*`` variables; raise SettingsError naming each bad one."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        sections = _sections()
        known = {f"{PREFIX}LOG_LEVEL"}
        for section, model in sections.items():
            values: dict[str, str] = {}
            for field_name in model.model_fields:
                var = env_var(section, field_name)
                known.add(var)
                if var in env and env[var] != "":
                    values[field_name] = env[var]
            if values or section == "postgres":
                raw[section] = values
        if env.get("PUBSUB_EMULATOR_HOST"):
            raw.setdefault("pubsub", {}).setdefault("emulator_host", env["PUBSUB_EMULATOR_HOST"])
        if env.get(f"{PREFIX}LOG_LEVEL"):
            raw["log_level"] = env[f"{PREFIX}LOG_LEVEL"].upper()
        raw["deployed"] = deployed(env)
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
        problems = [f"{var}: not a setting this package reads" for var in unknown]
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            problems += [_describe(err) for err in exc.errors()]
            raise SettingsError(problems) from None
        if settings.auth.development and settings.deployed:
            problems.append(f"{env_var('auth', 'development')}: refused on a deployed instance (K_SERVICE is set); "
                            f"set {env_var('auth', 'key_pepper')} from Secret Manager instead")
        if problems:
            raise SettingsError(problems)
        return settings

    def migration_target(self) -> PostgresSettings | None:
        """Connection settings of the migration's target database, or None when no migration is configured."""
        m = self.migration
        if m.target_host is None:
            return None
        return self.postgres.model_copy(update={
            "host": m.target_host, "port": m.target_port, "database": m.target_database, "user": m.target_user,
            "password": m.target_password, "dialect": m.target_dialect, "ssl": m.target_ssl,
            "instance_connection_name": None, "pool_size": m.target_pool_size})

    def key_pepper(self) -> bytes:
        """The HMAC key of stored API key secrets: the configured one, the development one, or SettingsError."""
        if self.auth.key_pepper is not None:
            return self.auth.key_pepper.get_secret_value().encode()
        if self.auth.development:
            return DEVELOPMENT_PEPPER
        raise SettingsError([f"{env_var('auth', 'key_pepper')}: required but not set (or set "
                             f"{env_var('auth', 'development')}=true on a local stack)"])

    def require_redis(self) -> RedisSettings:
        """The Redis section, or SettingsError naming the variable that would set it."""
        if self.redis is None:
            raise SettingsError([f"{env_var('redis', 'url')}: required but not set"])
        return self.redis


def serving_mode(environ: Mapping[str, str] | None = None) -> str:
    """FS_SERVING_MODE alone, checked: what a read function is registered as when it loads (threaded or async)."""
    return _mode(env_var("serving", "mode"), ServingSettings().mode, environ)


def cdc_serving_mode(environ: Mapping[str, str] | None = None) -> str:
    """FS_CDC_SERVING_MODE alone, checked: what ingest_changes is registered as when it loads."""
    return _mode(env_var("cdc", "serving_mode"), CdcSettings().serving_mode, environ)


def _mode(var: str, default: str, environ: Mapping[str, str] | None) -> str:
    raw = (os.environ if environ is None else environ).get(var) or default
    if raw not in ("async", "threaded"):
        raise SettingsError([f"{var}: must be async or threaded"])  # not the value: a problem never quotes one
    return raw


def deployed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on Cloud Run or Cloud Functions (they set K_SERVICE)."""
    return bool((os.environ if environ is None else environ).get("K_SERVICE"))


def env_var(section: str, field_name: str) -> str:
    """The environment variable that sets ``section.field_name``."""
    return f"{PREFIX}{section.upper()}_{field_name.upper()}"


def known_env_vars() -> frozenset[str]:
    """Every variable Settings reads: used to check deployment manifests."""
    names = {f"{PREFIX}LOG_LEVEL", "PUBSUB_EMULATOR_HOST"}
    for name, model in _sections().items():
        names.update(env_var(name, f) for f in model.model_fields)
    return frozenset(names)


def _sections() -> dict[str, type[_Section]]:
    """Section name -> model, unwrapping optional sections."""
    out: dict[str, type[_Section]] = {}
    for name, field in Settings.model_fields.items():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, _Section):
                out[name] = candidate
    return out


def _describe(err: Mapping[str, Any]) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if len(loc) == 1 and loc[0] in _sections():  # a section's own check, whose message names its variables
        return message
    if len(loc) >= 2:
        var = env_var(loc[0], loc[1])
    elif len(loc) == 1 and loc[0] == "log_level":
        var = f"{PREFIX}LOG_LEVEL"
    elif len(loc) == 1:
        var = f"{PREFIX}{loc[0].upper()}"
    else:
        var = "settings"
    if err.get("type") == "missing":
        message = "required but not set"
    return f"{var}: {message}"
