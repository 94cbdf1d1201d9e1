-- Mirrors of the PostgreSQL source tables (sql/postgres/0001_core_tables.sql) in the offline store,
-- loaded by the incremental export (shared/feature_store/services/etl.py): transactions are
-- append-only (INSERT of new keys), the others are merged on their key (MERGE).
-- Applied in name order with every other file of sql/bigquery/ by stores/bigquery_offline.py;
-- Rendering as changelog.sql: {dataset} is FS_BIGQUERY_DATASET (str.format, no other braces),
-- statements end with a semicolon at the end of a line. Money stays NUMERIC (exact) as in the source.

CREATE TABLE IF NOT EXISTS `{dataset}.users` (
    user_id              STRING NOT NULL,
    age                  INT64,
    location_country     STRING,
    signup_date          DATE NOT NULL,
    verification_status  STRING NOT NULL,
    income_bracket       STRING,
    created_at           TIMESTAMP NOT NULL,
    updated_at           TIMESTAMP NOT NULL
)
CLUSTER BY user_id;

-- Partitioned by day of created_at (point-in-time reads prune to the days they need) and
-- clustered by user and merchant (per-user aggregation reads few blocks).
CREATE TABLE IF NOT EXISTS `{dataset}.transactions` (
    transaction_id  STRING NOT NULL,
    user_id         STRING NOT NULL,
    amount          NUMERIC NOT NULL,
    currency        STRING NOT NULL,
    merchant        STRING NOT NULL,
    category        STRING NOT NULL,
    status          STRING NOT NULL,
    created_at      TIMESTAMP NOT NULL
)
PARTITION BY DATE(created_at)
CLUSTER BY user_id, merchant;

CREATE TABLE IF NOT EXISTS `{dataset}.risk_scores` (
    user_id             STRING NOT NULL,
    risk_score          NUMERIC,
    fraud_probability   NUMERIC,
    payment_delays      INT64 NOT NULL,
    device_trust_score  NUMERIC,
    credit_utilization  NUMERIC,
    calculated_at       TIMESTAMP NOT NULL
)
CLUSTER BY user_id;

CREATE TABLE IF NOT EXISTS `{dataset}.installment_plans` (
    plan_id          STRING NOT NULL,
    user_id          STRING NOT NULL,
    transaction_id   STRING NOT NULL,
    principal        NUMERIC NOT NULL,
    n_installments   INT64 NOT NULL,
    status           STRING NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
)
CLUSTER BY user_id;

-- The source's updated_at of installments (sql/postgres/0004) only drives the export's
-- watermark; it is not mirrored.
CREATE TABLE IF NOT EXISTS `{dataset}.installments` (
    plan_id     STRING NOT NULL,
    seq         INT64 NOT NULL,
    user_id     STRING NOT NULL,
    due_date    DATE NOT NULL,
    amount      NUMERIC NOT NULL,
    paid_at     TIMESTAMP
)
CLUSTER BY user_id;
