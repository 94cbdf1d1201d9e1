-- The reduced state of each request (a user at an instant) over the mirrored tables: the BigQuery
-- twin of sql/queries/user_state.sql (domain/state.py: UserState), computed only from rows whose
-- event time is at or before the request's instant.
--
-- {requests} is a relation (req_id, user_id, as_of TIMESTAMP); {dataset} the dataset. Rendered
-- with str.format by stores/bigquery_features.py, which puts the catalog's bq_sql expressions on
-- top (no other braces here). One row per request; at_s and at_day are the instant as epoch
-- seconds and UTC day number, computed as domain/catalog.py's Instant computes them. An empty
-- event list is NULL (UNNEST of NULL has no rows).
--
-- What the current-state mirrors cannot know (docs/offline.md): a row changed after the instant
-- shows its state at the instant only when that state is known. Users and plans are exact when
-- updated_at <= as_of; a user changed later has unknown demographics (null, never the later
-- values), a plan changed later was active at the instant (active is the only status that
-- changes). The latest risk score is used only if it was calculated by the instant. An order's
-- status is its current one (the source keeps no history of it).
WITH
req AS (
    SELECT req_id, user_id, as_of,
           UNIX_MICROS(as_of) / 1000000 AS at_s,
           CAST(FLOOR(UNIX_MICROS(as_of) / 1000000 / 86400) AS INT64) AS at_day
    FROM {requests}
),
-- Completed orders up to the instant, by category: totals and the favourite from one scan.
by_category AS (
    SELECT r.req_id, t.category, COUNT(*) AS n, SUM(t.amount) AS spent, MAX(t.created_at) AS last_at
    FROM req AS r
    JOIN `{dataset}.transactions` AS t ON t.user_id = r.user_id
    WHERE t.created_at <= r.as_of AND t.status = 'completed'
    GROUP BY r.req_id, t.category
),
tx AS (
    SELECT req_id,
           SUM(n) AS total_orders,
           SUM(spent) AS total_spent,
           MAX(last_at) AS last_order_at,
           -- the most frequent category, ties to the alphabetically first
           ARRAY_AGG(category ORDER BY n DESC, category LIMIT 1)[OFFSET(0)] AS favorite_category
    FROM by_category
    GROUP BY req_id
),
-- Velocity-eligible orders of the 7 days ending at the instant.
recent AS (
    SELECT r.req_id,
           ARRAY_AGG(STRUCT(UNIX_MICROS(t.created_at) / 1000000 AS ts, CAST(t.amount AS FLOAT64) AS amount,
                            t.merchant AS merchant) ORDER BY t.created_at) AS recent_orders
    FROM req AS r
    JOIN `{dataset}.transactions` AS t ON t.user_id = r.user_id
    WHERE t.status IN ('completed', 'pending')
      AND t.created_at > TIMESTAMP_SUB(r.as_of, INTERVAL 7 DAY) AND t.created_at <= r.as_of
    GROUP BY r.req_id
),
plans AS (
    SELECT r.req_id,
           COUNTIF(IF(p.updated_at <= r.as_of, p.status = 'active', TRUE)) AS open_plans
    FROM req AS r
    JOIN `{dataset}.installment_plans` AS p ON p.user_id = r.user_id
    WHERE p.created_at <= r.as_of
    GROUP BY r.req_id
),
-- Installments of the plans that existed at the instant; a payment counts once it was made.
inst AS (
    SELECT r.req_id, i.due_date, CAST(i.amount AS FLOAT64) AS amount,
           IF(i.paid_at <= r.as_of, i.paid_at, NULL) AS paid_at,
           r.as_of
    FROM req AS r
    JOIN `{dataset}.installments` AS i ON i.user_id = r.user_id
    JOIN `{dataset}.installment_plans` AS p ON p.plan_id = i.plan_id
    WHERE p.created_at <= r.as_of
),
paid AS (
    SELECT req_id,
           COUNTIF(DATE(paid_at) <= due_date) AS paid_on_time,
           COUNTIF(DATE(paid_at) > due_date) AS paid_late
    FROM inst
    WHERE paid_at IS NOT NULL
    GROUP BY req_id
),
late AS (
    SELECT req_id, ARRAY_AGG(UNIX_MICROS(paid_at) / 1000000 ORDER BY paid_at) AS late_paid_at
    FROM inst
    WHERE paid_at IS NOT NULL AND DATE(paid_at) > due_date AND paid_at > TIMESTAMP_SUB(as_of, INTERVAL 90 DAY)
    GROUP BY req_id
),
unpaid AS (
    SELECT req_id, ARRAY_AGG(STRUCT(UNIX_DATE(due_date) AS due_day, amount AS amount) ORDER BY due_date) AS unpaid
    FROM inst
    WHERE paid_at IS NULL
    GROUP BY req_id
)
SELECT r.req_id, r.user_id, r.as_of, r.at_s, r.at_day,
       IF(u.updated_at <= r.as_of, u.age, NULL)                                    AS age,
       IF(u.updated_at <= r.as_of, NULLIF(TRIM(u.location_country), ''), NULL)     AS location_country,
       IF(u.updated_at <= r.as_of, u.verification_status, NULL)                    AS verification_status,
       IF(u.updated_at <= r.as_of, u.income_bracket, NULL)                         AS income_bracket,
       IF(u.created_at <= r.as_of, UNIX_DATE(u.signup_date), NULL)                  AS signup_day,
       COALESCE(tx.total_orders, 0)                                                 AS total_orders,
       CAST(COALESCE(tx.total_spent, 0) AS FLOAT64)                                 AS total_spent,
       UNIX_MICROS(tx.last_order_at) / 1000000                                      AS last_order_at,
       tx.favorite_category,
       recent.recent_orders                                                         AS recent_orders,
       CAST(s.risk_score AS FLOAT64)                                                AS risk_score,
       CAST(s.fraud_probability AS FLOAT64)                                         AS fraud_probability,
       s.payment_delays,
       CAST(s.device_trust_score AS FLOAT64)                                        AS device_trust_score,
       CAST(s.credit_utilization AS FLOAT64)                                        AS credit_utilization,
       COALESCE(plans.open_plans, 0)                                                AS open_plans,
       COALESCE(paid.paid_on_time, 0)                                               AS paid_on_time,
       COALESCE(paid.paid_late, 0)                                                  AS paid_late,
       late.late_paid_at                                                            AS late_paid_at,
       unpaid.unpaid                                                                AS unpaid
FROM req AS r
LEFT JOIN `{dataset}.users` AS u ON u.user_id = r.user_id
LEFT JOIN tx ON tx.req_id = r.req_id
LEFT JOIN recent ON recent.req_id = r.req_id
LEFT JOIN plans ON plans.req_id = r.req_id
LEFT JOIN paid ON paid.req_id = r.req_id
LEFT JOIN late ON late.req_id = r.req_id
LEFT JOIN unpaid ON unpaid.req_id = r.req_id
LEFT JOIN `{dataset}.risk_scores` AS s ON s.user_id = r.user_id AND s.calculated_at <= r.as_of
