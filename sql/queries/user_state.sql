-- The reduced source state of a set of users, one row per user: its columns are exactly
-- domain/state.py's STATE_COLUMNS, in order (tests/integration/test_source_state.py checks it).
-- {scope} is a predicate on user_id: "user_id = ANY(CAST(:ids AS text[]))" for reads and CDC,
-- "user_id >= :lo AND user_id < :hi" for bulk refresh chunks. The statement is one snapshot;
-- its watermark is read by stores/source.py just before it runs (see SourceStore._snapshot).
WITH
-- Bulk refresh on PostgreSQL derives its statement from this one: it replaces the blocks between
-- "-- <name>:begin" and "-- <name>:end" by the sections of sql/queries/user_state_bulk.postgresql.sql
-- and packs the columns block's expressions into the cached binary body (stores/postgres_bulk.py);
-- tests/integration/test_refresh_source.py holds every user's bytes equal to the point read's.
-- tx:begin
-- One pass over every monthly partition: completed orders grouped by user and category, so
-- that totals and the favourite category come from the same scan.
by_category AS (
    SELECT user_id, category, count(*) AS n, sum(amount) AS spent, max(created_at) AS last_at
    FROM transactions
    WHERE {scope} AND status = 'completed'
    GROUP BY user_id, category
),
tx AS (
    SELECT user_id,
           sum(n)         AS total_orders,
           sum(spent)     AS total_spent,
           max(last_at)   AS last_order_at,
           -- the most frequent category, ties to the alphabetically first (CockroachDB has no mode())
           (array_agg(category ORDER BY n DESC, category))[1] AS favorite_category
    FROM by_category
    GROUP BY user_id
),
-- tx:end
-- The velocity horizon only: created_at bounds prune this scan to the last one or two partitions.
recent AS (
    SELECT user_id,
-- recent:begin
           json_agg(json_build_array(extract(epoch FROM created_at), amount, merchant)
                    ORDER BY created_at, transaction_id) AS recent_orders
-- recent:end
    FROM transactions
    WHERE {scope} AND status IN ('completed', 'pending') AND created_at > now() - INTERVAL '7 days'
    GROUP BY user_id
),
plans AS (
    SELECT user_id, count(*) FILTER (WHERE status = 'active') AS open_plans
    FROM installment_plans
    WHERE {scope}
    GROUP BY user_id
),
inst AS (
    SELECT user_id,
           count(*) FILTER (WHERE paid_at IS NOT NULL
                              AND CAST(paid_at AT TIME ZONE 'UTC' AS date) <= due_date) AS paid_on_time,
           count(*) FILTER (WHERE paid_at IS NOT NULL
                              AND CAST(paid_at AT TIME ZONE 'UTC' AS date) > due_date)  AS paid_late,
-- lists:begin
           json_agg(extract(epoch FROM paid_at) ORDER BY paid_at)
               FILTER (WHERE paid_at IS NOT NULL
                         AND CAST(paid_at AT TIME ZONE 'UTC' AS date) > due_date
                         AND paid_at > now() - INTERVAL '90 days')                      AS late_paid_at,
           json_agg(json_build_array(due_date - DATE '1970-01-01', amount) ORDER BY due_date, plan_id, seq)
               FILTER (WHERE paid_at IS NULL)                                            AS unpaid
-- lists:end
    FROM installments
    WHERE {scope}
    GROUP BY user_id
)
SELECT u.user_id,
-- columns:begin
       extract(epoch FROM now())                      AS computed_at,
       u.age, rtrim(u.location_country)              AS location_country, u.verification_status, u.income_bracket,
       u.signup_date - DATE '1970-01-01'              AS signup_day,
       COALESCE(tx.total_orders, 0)                   AS total_orders,
       COALESCE(tx.total_spent, 0)                    AS total_spent,
       extract(epoch FROM tx.last_order_at)           AS last_order_at,
       tx.favorite_category,
       recent.recent_orders,
       r.risk_score, r.fraud_probability, r.payment_delays, r.device_trust_score, r.credit_utilization,
       COALESCE(plans.open_plans, 0)                  AS open_plans,
       COALESCE(inst.paid_on_time, 0)                 AS paid_on_time,
       COALESCE(inst.paid_late, 0)                    AS paid_late,
       inst.late_paid_at,
       inst.unpaid
-- columns:end
FROM users u
LEFT JOIN tx USING (user_id)
LEFT JOIN recent USING (user_id)
LEFT JOIN plans USING (user_id)
LEFT JOIN inst USING (user_id)
LEFT JOIN risk_scores r USING (user_id)
WHERE {scope_u}
ORDER BY u.user_id
