-- The ETL's own bookkeeping. etl_watermarks holds, per mirrored table, the modification time of
-- the last row merged (ISO 8601, UTC): it only moves after that row's MERGE succeeded, so a failed
-- step leaves it where it was. etl_runs holds one row per workflow run (workflows/etl.yaml).

CREATE TABLE IF NOT EXISTS `{dataset}.etl_watermarks` (
    source_table  STRING NOT NULL,
    watermark     STRING NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    etl_run_id    STRING NOT NULL
);

CREATE TABLE IF NOT EXISTS `{dataset}.etl_runs` (
    run_id        STRING NOT NULL,
    kind          STRING NOT NULL,      -- etl
    status        STRING NOT NULL,      -- running | succeeded | failed
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    rows_loaded   INT64,
    error         STRING,
    steps         STRING                -- JSON: what each step reported
);
