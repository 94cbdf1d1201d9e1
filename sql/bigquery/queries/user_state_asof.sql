-- The reduced state of each request (a user at an instant) over the mirrored tables: the BigQuery
-- twin of sql/queries/user_state.sql (domain/state.py: UserState), computed only from what was
-- known at the request's instant.
--
-- {requests} is a relation (req_id, user_id, as_of TIMESTAMP); {dataset} the dataset. Rendered
-- with str.format by stores/bigquery_features.py, which puts the catalog's bq_sql expressions on
-- top (no other braces here). One row per request; at_s and at_day are the instant as epoch
-- seconds and UTC day number, computed as domain/catalog.py's Instant computes them. An empty
-- event list is NULL (UNNEST of NULL has no rows).
--
-- Rows come from the mirrors (current state) where their version is at or before the instant, and
-- otherwise from the CDC changelog (sql/bigquery/changelog.sql): the latest change of the row
-- made at or before the instant tells what the row was then. With neither (docs/offline.md): a
-- user's demographics are unknown (null, never the later values); a plan was active (the only
-- status that changes); a risk score calculated later is unknown; an order has its current status.
-- Events carry their own time and need no history: orders by created_at, payments by paid_at.
WITH
req AS (
    SELECT req_id, user_id, as_of,
           UNIX_MICROS(as_of) / 1000000 AS at_s,
           CAST(FLOOR(UNIX_MICROS(as_of) / 1000000 / 86400) AS INT64) AS at_day
    FROM {requests}
),
-- Each order's status at the instant, where the changelog saw one (a delete: the order was gone).
tx_then AS (
    SELECT r.req_id, c.transaction_id,
           ARRAY_AGG(STRUCT(c.change_op AS op, c.status AS status) ORDER BY c.lsn DESC LIMIT 1)[OFFSET(0)] AS img
    FROM req AS r
    JOIN `{dataset}.changelog_transactions` AS c ON c.user_id = r.user_id AND c.changed_at <= r.as_of
    GROUP BY r.req_id, c.transaction_id
),
orders AS (
    SELECT r.req_id, r.as_of, t.amount, t.merchant, t.category, t.created_at,
           IF(tt.img.op IS NULL, t.status, tt.img.status) AS status
    FROM req AS r
    JOIN `{dataset}.transactions` AS t ON t.user_id = r.user_id
    LEFT JOIN tx_then AS tt ON tt.req_id = r.req_id AND tt.transaction_id = t.transaction_id
    WHERE t.created_at <= r.as_of AND (tt.img.op IS NULL OR tt.img.op != 'delete')
),
-- Completed orders up to the instant, by category: totals and the favourite from one scan.
by_category AS (
    SELECT req_id, category, COUNT(*) AS n, SUM(amount) AS spent, MAX(created_at) AS last_at
    FROM orders
    WHERE status = 'completed'
    GROUP BY req_id, category
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
    SELECT req_id,
           ARRAY_AGG(STRUCT(UNIX_MICROS(created_at) / 1000000 AS ts, CAST(amount AS FLOAT64) AS amount,
                            merchant AS merchant) ORDER BY created_at) AS recent_orders
    FROM orders
    WHERE status IN ('completed', 'pending') AND created_at > TIMESTAMP_SUB(as_of, INTERVAL 7 DAY)
    GROUP BY req_id
),
plan_then AS (
    SELECT r.req_id, c.plan_id,
           ARRAY_AGG(STRUCT(c.change_op AS op, c.status AS status) ORDER BY c.lsn DESC LIMIT 1)[OFFSET(0)] AS img
    FROM req AS r
    JOIN `{dataset}.changelog_installment_plans` AS c ON c.user_id = r.user_id AND c.changed_at <= r.as_of
    GROUP BY r.req_id, c.plan_id
),
plans AS (
    SELECT r.req_id,
           COUNTIF(CASE WHEN p.updated_at <= r.as_of THEN p.status = 'active'
                        WHEN pt.img.op IS NOT NULL THEN pt.img.op != 'delete' AND pt.img.status = 'active'
                        ELSE TRUE END) AS open_plans
    FROM req AS r
    JOIN `{dataset}.installment_plans` AS p ON p.user_id = r.user_id
    LEFT JOIN plan_then AS pt ON pt.req_id = r.req_id AND pt.plan_id = p.plan_id
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
),
user_then AS (
    SELECT r.req_id,
           ARRAY_AGG(STRUCT(c.change_op AS op, c.age AS age, c.location_country AS location_country,
                            c.verification_status AS verification_status, c.income_bracket AS income_bracket)
                     ORDER BY c.lsn DESC LIMIT 1)[OFFSET(0)] AS img
    FROM req AS r
    JOIN `{dataset}.changelog_users` AS c ON c.user_id = r.user_id AND c.changed_at <= r.as_of
    GROUP BY r.req_id
),
risk AS (
    SELECT r.req_id,
           ARRAY_AGG(STRUCT(c.change_op AS op, c.risk_score AS risk_score, c.fraud_probability AS fraud_probability,
                            c.payment_delays AS payment_delays, c.device_trust_score AS device_trust_score,
                            c.credit_utilization AS credit_utilization)
                     ORDER BY c.lsn DESC LIMIT 1)[OFFSET(0)] AS img
    FROM req AS r
    JOIN `{dataset}.changelog_risk_scores` AS c
      ON c.user_id = r.user_id AND c.changed_at <= r.as_of AND c.calculated_at <= r.as_of
    GROUP BY r.req_id
)
SELECT r.req_id, r.user_id, r.as_of, r.at_s, r.at_day,
       CASE WHEN u.updated_at <= r.as_of THEN u.age
            WHEN ut.img.op != 'delete' THEN ut.img.age END                        AS age,
       NULLIF(TRIM(CASE WHEN u.updated_at <= r.as_of THEN u.location_country
                        WHEN ut.img.op != 'delete' THEN ut.img.location_country END), '')  AS location_country,
       CASE WHEN u.updated_at <= r.as_of THEN u.verification_status
            WHEN ut.img.op != 'delete' THEN ut.img.verification_status END        AS verification_status,
       CASE WHEN u.updated_at <= r.as_of THEN u.income_bracket
            WHEN ut.img.op != 'delete' THEN ut.img.income_bracket END             AS income_bracket,
       IF(u.created_at <= r.as_of, UNIX_DATE(u.signup_date), NULL)                AS signup_day,
       COALESCE(tx.total_orders, 0)                                               AS total_orders,
       CAST(COALESCE(tx.total_spent, 0) AS FLOAT64)                               AS total_spent,
       UNIX_MICROS(tx.last_order_at) / 1000000                                    AS last_order_at,
       tx.favorite_category,
       recent.recent_orders                                                       AS recent_orders,
       CAST(CASE WHEN s.calculated_at <= r.as_of THEN s.risk_score
                 WHEN rk.img.op != 'delete' THEN rk.img.risk_score END AS FLOAT64)          AS risk_score,
       CAST(CASE WHEN s.calculated_at <= r.as_of THEN s.fraud_probability
                 WHEN rk.img.op != 'delete' THEN rk.img.fraud_probability END AS FLOAT64)   AS fraud_probability,
       CASE WHEN s.calculated_at <= r.as_of THEN s.payment_delays
            WHEN rk.img.op != 'delete' THEN rk.img.payment_delays END                       AS payment_delays,
       CAST(CASE WHEN s.calculated_at <= r.as_of THEN s.device_trust_score
                 WHEN rk.img.op != 'delete' THEN rk.img.device_trust_score END AS FLOAT64)  AS device_trust_score,
       CAST(CASE WHEN s.calculated_at <= r.as_of THEN s.credit_utilization
                 WHEN rk.img.op != 'delete' THEN rk.img.credit_utilization END AS FLOAT64)  AS credit_utilization,
       COALESCE(plans.open_plans, 0)                                              AS open_plans,
       COALESCE(paid.paid_on_time, 0)                                             AS paid_on_time,
       COALESCE(paid.paid_late, 0)                                                AS paid_late,
       late.late_paid_at                                                          AS late_paid_at,
       unpaid.unpaid                                                              AS unpaid
FROM req AS r
LEFT JOIN `{dataset}.users` AS u ON u.user_id = r.user_id
LEFT JOIN user_then AS ut ON ut.req_id = r.req_id
LEFT JOIN tx ON tx.req_id = r.req_id
LEFT JOIN recent ON recent.req_id = r.req_id
LEFT JOIN plans ON plans.req_id = r.req_id
LEFT JOIN paid ON paid.req_id = r.req_id
LEFT JOIN late ON late.req_id = r.req_id
LEFT JOIN unpaid ON unpaid.req_id = r.req_id
LEFT JOIN `{dataset}.risk_scores` AS s ON s.user_id = r.user_id
LEFT JOIN risk AS rk ON rk.req_id = r.req_id
