-- Changelog tables of the offline store: one row per source row change, streamed by the
-- ingest_changes function (shared/feature_store/stores/bigquery_changelog.py), one table per
-- captured PostgreSQL table. Owner: CDC ingestion (docs/cdc.md).
--
-- Rendering: {dataset} is FS_BIGQUERY_DATASET (the client's project is the default project);
-- the text is rendered with Python's str.format, so no other braces appear here. Statements
-- are separated by a semicolon at the end of a line. Every statement is idempotent.
--
-- Columns common to every changelog table:
--   change_op         insert | update | delete | snapshot (Debezium op c | u | d | r)
--   source_watermark  the change's position as its source writes it: PostgreSQL LSN 16/B374D848,
--                     CockroachDB HLC <wall ns>.<logical>
--   lsn               the same position as 24 lowercase hex digits (the Redis watermark's form): text
--                     order is position order, and a CockroachDB HLC position (96 bits) fits, which
--                     INT64 does not; orders the changes of one row
--   tx_id             source transaction id (Debezium source.txId)
--   changed_at        when the change was made in the source (Debezium source.ts_ms)
--   ingested_at       when the function streamed the row
--   message_id        the Pub/Sub message that carried the change
--   row_key           the row's primary key as compact JSON text, e.g. ["t000000001","2026-11-02T10:00:00+00:00"]
-- then the row's columns: the row after the change, or before it for a delete.
--
-- Delivery is at least once. Streaming inserts carry insertId = hash(table, lsn, row_key), which
-- BigQuery uses for best-effort dedup; readers that need exactly one row per change read the
-- changelog_<table>_dedup views below (one row per (lsn, row_key)).

CREATE SCHEMA IF NOT EXISTS `{dataset}`;

CREATE TABLE IF NOT EXISTS `{dataset}.changelog_users` (
    change_op STRING NOT NULL, source_watermark STRING NOT NULL, lsn STRING NOT NULL, tx_id INT64,
    changed_at TIMESTAMP NOT NULL, ingested_at TIMESTAMP NOT NULL, message_id STRING, row_key STRING NOT NULL,
    user_id STRING, age INT64, location_country STRING, signup_date DATE, verification_status STRING,
    income_bracket STRING, created_at TIMESTAMP, updated_at TIMESTAMP
)
PARTITION BY DATE(changed_at)
CLUSTER BY user_id;

CREATE TABLE IF NOT EXISTS `{dataset}.changelog_transactions` (
    change_op STRING NOT NULL, source_watermark STRING NOT NULL, lsn STRING NOT NULL, tx_id INT64,
    changed_at TIMESTAMP NOT NULL, ingested_at TIMESTAMP NOT NULL, message_id STRING, row_key STRING NOT NULL,
    transaction_id STRING, user_id STRING, amount NUMERIC, currency STRING, merchant STRING, category STRING,
    status STRING, created_at TIMESTAMP
)
PARTITION BY DATE(changed_at)
CLUSTER BY user_id;

CREATE TABLE IF NOT EXISTS `{dataset}.changelog_risk_scores` (
    change_op STRING NOT NULL, source_watermark STRING NOT NULL, lsn STRING NOT NULL, tx_id INT64,
    changed_at TIMESTAMP NOT NULL, ingested_at TIMESTAMP NOT NULL, message_id STRING, row_key STRING NOT NULL,
    user_id STRING, risk_score NUMERIC, fraud_probability NUMERIC, payment_delays INT64,
    device_trust_score NUMERIC, credit_utilization NUMERIC, calculated_at TIMESTAMP
)
PARTITION BY DATE(changed_at)
CLUSTER BY user_id;

CREATE TABLE IF NOT EXISTS `{dataset}.changelog_installment_plans` (
    change_op STRING NOT NULL, source_watermark STRING NOT NULL, lsn STRING NOT NULL, tx_id INT64,
    changed_at TIMESTAMP NOT NULL, ingested_at TIMESTAMP NOT NULL, message_id STRING, row_key STRING NOT NULL,
    plan_id STRING, user_id STRING, transaction_id STRING, principal NUMERIC, n_installments INT64,
    status STRING, created_at TIMESTAMP, updated_at TIMESTAMP
)
PARTITION BY DATE(changed_at)
CLUSTER BY user_id;

CREATE TABLE IF NOT EXISTS `{dataset}.changelog_installments` (
    change_op STRING NOT NULL, source_watermark STRING NOT NULL, lsn STRING NOT NULL, tx_id INT64,
    changed_at TIMESTAMP NOT NULL, ingested_at TIMESTAMP NOT NULL, message_id STRING, row_key STRING NOT NULL,
    plan_id STRING, seq INT64, user_id STRING, due_date DATE, amount NUMERIC, paid_at TIMESTAMP, updated_at TIMESTAMP
)
PARTITION BY DATE(changed_at)
CLUSTER BY user_id;
-- updated_at came later (sql/postgres/0004): a dataset created before it gains the column.
ALTER TABLE `{dataset}.changelog_installments` ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP;

CREATE OR REPLACE VIEW `{dataset}.changelog_users_dedup` AS
SELECT * FROM `{dataset}.changelog_users` WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY lsn, row_key ORDER BY ingested_at) = 1;

CREATE OR REPLACE VIEW `{dataset}.changelog_transactions_dedup` AS
SELECT * FROM `{dataset}.changelog_transactions` WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY lsn, row_key ORDER BY ingested_at) = 1;

CREATE OR REPLACE VIEW `{dataset}.changelog_risk_scores_dedup` AS
SELECT * FROM `{dataset}.changelog_risk_scores` WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY lsn, row_key ORDER BY ingested_at) = 1;

CREATE OR REPLACE VIEW `{dataset}.changelog_installment_plans_dedup` AS
SELECT * FROM `{dataset}.changelog_installment_plans` WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY lsn, row_key ORDER BY ingested_at) = 1;

CREATE OR REPLACE VIEW `{dataset}.changelog_installments_dedup` AS
SELECT * FROM `{dataset}.changelog_installments` WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY lsn, row_key ORDER BY ingested_at) = 1;
