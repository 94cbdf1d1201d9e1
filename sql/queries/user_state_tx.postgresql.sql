-- The tx CTE of sql/queries/user_state.sql in one pass, for bulk refresh on PostgreSQL: the same
-- columns and values (tests/integration/test_refresh_source.py compares every user's bytes with the
-- point read's), without grouping by category first. mode() is the most frequent category, ties to
-- the first in sort order, as the portable form's array_agg(category ORDER BY n DESC, category)[1];
-- CockroachDB has no mode(). About a fifth less work per chunk (docs/capacity.md).
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
