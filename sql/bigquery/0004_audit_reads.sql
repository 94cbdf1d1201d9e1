-- The audit trail of reads (docs/security.md, "Audit trail and receipts"): one row per (request, user),
-- written by the Pub/Sub BigQuery subscription of topic audit-reads with use_table_schema (each message is
-- one row as JSON: domain/audit.py ReadAudit.rows), or locally by the BigQuery sink (stores/audit_sinks.py).
-- One row per user, not one per request with a REPEATED vectors field: a subscription writes one row per
-- message either way, and "every read of this user" must prune by clustering on user_id, which a
-- repeated field cannot be. A batch read is its rows with the same request_id, position 0..batch_size-1.
-- No feature value is kept: only the names served and a digest per vector (a receipt recomputes both).
-- Retention: Terraform sets the partition expiration (variable audit_retention_days).

CREATE TABLE IF NOT EXISTS `{dataset}.audit_reads` (
    request_id           STRING NOT NULL,     -- ours: a ULID made when the request arrived
    position             INT64 NOT NULL,      -- the user's place in the request (0 for a single read)
    client_request_id    STRING,              -- the caller's X-Request-Id when well formed, never trusted as a key
    client_id            STRING NOT NULL,     -- who asked
    purpose              STRING,              -- the caller's X-Purpose
    kind                 STRING NOT NULL,     -- single | batch
    transport            STRING NOT NULL,     -- rest | grpc
    batch_size           INT64 NOT NULL,
    feature_set          STRING NOT NULL,
    feature_set_version  INT64 NOT NULL,
    feature_names        ARRAY<STRING>,       -- the features served (a selection or all)
    user_id              STRING NOT NULL,
    status               STRING NOT NULL,     -- ok | unknown_user | unavailable
    cache_hit            BOOL NOT NULL,
    source_watermark     STRING,              -- the vector's source position, as served
    computed_at          TIMESTAMP,           -- the instant the served state was computed at
    computed_at_served   STRING,              -- computed_at as the response carried it (the digest covers it)
    digest               STRING,              -- sha256 of the canonical vector served (domain/audit.py)
    digest_version       INT64 NOT NULL,
    as_of                TIMESTAMP NOT NULL,  -- the instant features were evaluated at
    served_at            TIMESTAMP NOT NULL,  -- when the answer was ready
    degraded_reason      STRING
)
PARTITION BY DATE(served_at)
CLUSTER BY user_id, client_id;
