-- The sections bulk refresh on PostgreSQL puts in place of sql/queries/user_state.sql's marked
-- blocks (stores/postgres_bulk.py: bulk_user_state). Each gives the same values as the block it
-- replaces, in the form the cached binary body needs (docs/redis-keys.md); the columns block is not
-- here: its expressions are taken from user_state.sql itself and packed in SQL. Sections start with
-- "-- [<block>]". Rendered with str.format like the statement: {scope} only.

-- [tx]
-- In one pass, without grouping by category first: mode() is the most frequent category, ties to the
-- first in sort order, as array_agg(category ORDER BY n DESC, category)[1] (CockroachDB has no mode()).
tx AS (
    SELECT user_id,
           count(*)                                       AS total_orders,
           sum(amount)                                    AS total_spent,
           max(created_at)                                AS last_order_at,
           mode() WITHIN GROUP (ORDER BY category)        AS favorite_category
    FROM transactions
    WHERE {scope} AND status = 'completed'
    GROUP BY user_id
),

-- [recent]
-- recent_orders as the body's columns: times (doubles), amounts (uint32 cents), merchants (NUL-separated);
-- the same order as the JSON form, so the three line up.
           count(*)                                                                      AS recent_n,
           string_agg(float8send(CAST(extract(epoch FROM created_at) AS float8)), ''
                      ORDER BY created_at, transaction_id)                               AS recent_at,
           string_agg(substring(int8send(CAST(amount * 100 AS bigint)) FROM 5), ''
                      ORDER BY created_at, transaction_id)                               AS recent_cents,
           string_agg(convert_to(merchant, 'UTF8'), '\x00'::bytea
                      ORDER BY created_at, transaction_id)                               AS recent_merchants,
           max(amount)                                                                   AS recent_max

-- [lists]
-- late_paid_at and unpaid as the body's columns, with what the fit checks need (finite times, the
-- range of the due days and of the amounts).
           count(*) FILTER (WHERE paid_at IS NOT NULL
                              AND CAST(paid_at AT TIME ZONE 'UTC' AS date) > due_date
                              AND paid_at > now() - INTERVAL '90 days')                  AS late_n,
           string_agg(float8send(CAST(extract(epoch FROM paid_at) AS float8)), '' ORDER BY paid_at)
               FILTER (WHERE paid_at IS NOT NULL
                         AND CAST(paid_at AT TIME ZONE 'UTC' AS date) > due_date
                         AND paid_at > now() - INTERVAL '90 days')                       AS late_at,
           bool_and(isfinite(paid_at))
               FILTER (WHERE paid_at IS NOT NULL
                         AND CAST(paid_at AT TIME ZONE 'UTC' AS date) > due_date
                         AND paid_at > now() - INTERVAL '90 days')                       AS late_finite,
           count(*) FILTER (WHERE paid_at IS NULL)                                       AS unpaid_n,
           string_agg(substring(int4send(due_date - DATE '1970-01-01') FROM 3), ''
                      ORDER BY due_date, plan_id, seq) FILTER (WHERE paid_at IS NULL)    AS unpaid_days,
           string_agg(substring(int8send(CAST(amount * 100 AS bigint)) FROM 5), ''
                      ORDER BY due_date, plan_id, seq) FILTER (WHERE paid_at IS NULL)    AS unpaid_cents,
           min(due_date) FILTER (WHERE paid_at IS NULL)                                  AS unpaid_first,
           max(due_date) FILTER (WHERE paid_at IS NULL)                                  AS unpaid_last,
           max(amount) FILTER (WHERE paid_at IS NULL)                                    AS unpaid_max
