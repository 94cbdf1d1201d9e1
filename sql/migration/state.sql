-- The migration's own state, kept in the TARGET database (docs/migration.md). Every statement is
-- idempotent; the run_migration prepare phase applies this file. Types are shared by PostgreSQL and
-- CockroachDB.

-- One row: where the migration stands. direction tells replicate_changes what to apply
-- (none | forward: source -> target | reverse: target -> source); truth is the database the
-- application writes to (source | target); percent is the share of users whose reads go to the target.
CREATE TABLE IF NOT EXISTS fs_migration_state (
    name        VARCHAR(16) PRIMARY KEY,
    direction   VARCHAR(16) NOT NULL DEFAULT 'none',
    truth       VARCHAR(16) NOT NULL DEFAULT 'source',
    percent     NUMERIC(6, 2) NOT NULL DEFAULT 0,
    doc         JSONB NOT NULL DEFAULT '{}',
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per workflow run (workflows/migration.yaml), like BigQuery's etl_runs for the ETL.
CREATE TABLE IF NOT EXISTS fs_migration_runs (
    run_id       VARCHAR(100) PRIMARY KEY,
    status       VARCHAR(16) NOT NULL,
    phase        VARCHAR(32),
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    steps        JSONB NOT NULL DEFAULT '{}',
    error        TEXT
);

-- Backfill checkpoints: one row per copied chunk, written in the transaction that copied it, so a
-- killed backfill resumes after its last committed chunk and never copies one twice.
CREATE TABLE IF NOT EXISTS fs_migration_chunks (
    job         VARCHAR(100) NOT NULL,
    tbl         VARCHAR(64) NOT NULL,
    chunk       INTEGER NOT NULL,
    after_key   JSONB,
    last_key    JSONB,
    rows_copied BIGINT NOT NULL,
    seconds     DOUBLE PRECISION NOT NULL,
    done_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job, tbl, chunk)
);

-- Verification results: one row per chunk and pass.
CREATE TABLE IF NOT EXISTS fs_migration_checks (
    job          VARCHAR(100) NOT NULL,
    tbl          VARCHAR(64) NOT NULL,
    chunk        INTEGER NOT NULL,
    after_key    JSONB,
    last_key     JSONB,
    source_rows  BIGINT NOT NULL,
    target_rows  BIGINT NOT NULL,
    source_sum   VARCHAR(32) NOT NULL,
    target_sum   VARCHAR(32) NOT NULL,
    status       VARCHAR(16) NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 1,
    checked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job, tbl, chunk)
);
