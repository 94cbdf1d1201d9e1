-- Per-row positions of the replication (docs/migration.md), kept in the database that RECEIVES the
-- changes: the target while replicating forward, the source while replicating back after the cutover.
-- A change is applied only when its position (source LSN or CockroachDB HLC) is above the row's, so
-- duplicates, redeliveries and reordering never replace newer data; deleted = true is a tombstone, so a
-- late copy or an old update cannot bring a deleted row back. Keys are the source tables' primary keys.
-- Every statement is idempotent.
CREATE TABLE IF NOT EXISTS fs_replica_users (
    user_id     VARCHAR(64) NOT NULL,
    position    NUMERIC(30, 0) NOT NULL,
    deleted     BOOLEAN NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id)
);
CREATE TABLE IF NOT EXISTS fs_replica_transactions (
    transaction_id  VARCHAR(64) NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    position        NUMERIC(30, 0) NOT NULL,
    deleted         BOOLEAN NOT NULL,
    applied_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, created_at)
);
CREATE TABLE IF NOT EXISTS fs_replica_risk_scores (
    user_id     VARCHAR(64) NOT NULL,
    position    NUMERIC(30, 0) NOT NULL,
    deleted     BOOLEAN NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id)
);
CREATE TABLE IF NOT EXISTS fs_replica_installment_plans (
    plan_id     VARCHAR(64) NOT NULL,
    position    NUMERIC(30, 0) NOT NULL,
    deleted     BOOLEAN NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id)
);
CREATE TABLE IF NOT EXISTS fs_replica_installments (
    plan_id     VARCHAR(64) NOT NULL,
    seq         INTEGER NOT NULL,
    position    NUMERIC(30, 0) NOT NULL,
    deleted     BOOLEAN NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (plan_id, seq)
);
-- What the replication has done, per direction: written in the transaction of every batch it applies.
CREATE TABLE IF NOT EXISTS fs_replication_progress (
    direction        VARCHAR(16) PRIMARY KEY,
    applied          BIGINT NOT NULL DEFAULT 0,
    stale            BIGINT NOT NULL DEFAULT 0,
    batches          BIGINT NOT NULL DEFAULT 0,
    last_position    NUMERIC(30, 0),
    last_commit_at   TIMESTAMPTZ,
    last_applied_at  TIMESTAMPTZ,
    last_lag_ms      DOUBLE PRECISION
);
-- The API clients and keys are not in the change stream; their position tables stay empty but exist like
-- every migrated table's (stores/migration_tables.py: MIGRATED).
CREATE TABLE IF NOT EXISTS fs_replica_api_clients (
    client_id   VARCHAR(64) NOT NULL,
    position    NUMERIC(30, 0) NOT NULL,
    deleted     BOOLEAN NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id)
);
CREATE TABLE IF NOT EXISTS fs_replica_api_keys (
    key_id      VARCHAR(32) NOT NULL,
    position    NUMERIC(30, 0) NOT NULL,
    deleted     BOOLEAN NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id)
);
