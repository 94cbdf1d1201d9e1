-- The daily feature snapshot: one row per (snapshot_date, feature set version, user), one typed
-- column per feature of the catalog (shared/feature_store/domain/catalog.py), evaluated at the
-- end of snapshot_date (as_of) from the mirrored tables by the same definitions the online path
-- uses (each feature's bq_sql; stores/bigquery_features.py generates the SELECT).
-- A column serves every version that has a feature of that name; tests/unit/test_bq_ddl.py fails
-- when a catalog feature has no column here. Rebuilding a date replaces its rows.

CREATE TABLE IF NOT EXISTS `{dataset}.feature_snapshots` (
    snapshot_date          DATE NOT NULL,
    user_id                STRING NOT NULL,
    feature_set            STRING NOT NULL,
    feature_set_version    INT64 NOT NULL,
    as_of                  TIMESTAMP NOT NULL,   -- the instant the features are evaluated at
    source_watermark       STRING,               -- JSON: the export watermark of each mirrored table
    computed_at            TIMESTAMP NOT NULL,   -- when the snapshot was built
    etl_run_id             STRING,
    -- demographics
    age                    INT64,
    location_country       STRING,
    verification_status    STRING,
    income_bracket         STRING,
    days_since_signup      INT64,
    -- behavior
    total_orders           INT64,
    avg_order_value        FLOAT64,
    total_spent            FLOAT64,
    last_order_days        INT64,
    favorite_category      STRING,
    -- risk
    risk_score             FLOAT64,
    fraud_probability      FLOAT64,
    payment_delays         INT64,
    device_trust_score     FLOAT64,
    credit_utilization     FLOAT64,
    -- repayment
    outstanding_balance    FLOAT64,
    open_plans             INT64,
    max_days_past_due      INT64,
    late_payments_90d      INT64,
    on_time_rate           FLOAT64,
    -- velocity
    orders_1h              INT64,
    orders_24h             INT64,
    orders_7d              INT64,
    amount_24h             FLOAT64,
    amount_7d              FLOAT64,
    distinct_merchants_7d  INT64,
    -- added by credit_decision v2
    amount_1h              FLOAT64,
    avg_order_value_7d     FLOAT64
)
PARTITION BY snapshot_date
CLUSTER BY feature_set, user_id;
