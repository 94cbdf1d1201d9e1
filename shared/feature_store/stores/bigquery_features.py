"""BigQuery SQL of the feature catalog: a feature set evaluated over the as-of user state.

Each feature's ``bq_sql`` (domain/catalog.py) is put on top of
sql/bigquery/queries/user_state_asof.sql, so the daily snapshot and point-in-time training sets
compute every feature by the definition the online path uses; tests/integration/test_etl_snapshot.py
checks the values against ``FeatureSet.evaluate`` on the same users.

Generated statements begin with the ``py_round`` temporary function, which makes them scripts, and
the BigQuery emulator binds no query parameters in scripts: values are inlined with ``literal``,
which quotes every kind it accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import cache

from feature_store.domain.catalog import Feature, FeatureSet
from feature_store.errors import OfflineQueryFailed
from feature_store.stores.sql_files import sql_root

# Python's round(x, n) of a FLOAT64: the exact binary value of x rounded half to even at n
# decimals. BigQuery's ROUND rounds halves away from zero and works on x * 10^n (itself rounded),
# so 50.125 -> 50.13 there and 50.12 in Python. FORMAT('%.30f') prints the exact expansion far
# enough to tell a tie from a near-tie for every value a feature takes (|x| < 1e6, n <= 3).
PY_ROUND = """CREATE TEMP FUNCTION py_round(x FLOAT64, n INT64) AS (
  IF(x IS NULL, NULL, SIGN(x) * (
    CAST(REPLACE(SUBSTR(FORMAT('%.30f', ABS(x)), 1, STRPOS(FORMAT('%.30f', ABS(x)), '.') + n), '.', '') AS INT64)
    + IF(SUBSTR(FORMAT('%.30f', ABS(x)), STRPOS(FORMAT('%.30f', ABS(x)), '.') + n + 1) > RPAD('5', 30 - n, '0')
         OR (SUBSTR(FORMAT('%.30f', ABS(x)), STRPOS(FORMAT('%.30f', ABS(x)), '.') + n + 1) = RPAD('5', 30 - n, '0')
             AND MOD(CAST(RIGHT(REPLACE(SUBSTR(FORMAT('%.30f', ABS(x)), 1, STRPOS(FORMAT('%.30f', ABS(x)), '.') + n),
                                        '.', ''), 1) AS INT64), 2) = 1), 1, 0)
  ) / POW(10, n))
);"""

BQ_TYPES = {"int64": "INT64", "float64": "FLOAT64", "string": "STRING"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")


@cache
def state_template() -> str:
    """The text of sql/bigquery/queries/user_state_asof.sql."""
    return (sql_root() / "bigquery" / "queries" / "user_state_asof.sql").read_text()


def identifier(name: str) -> str:
    """``name`` if it is a plain column or table name, else OfflineQueryFailed (it would be inlined)."""
    if not _IDENTIFIER.fullmatch(name):
        raise OfflineQueryFailed(f"{name!r} is not a plain BigQuery name", code="invalid_identifier")
    return name


def literal(value: object) -> str:
    """A BigQuery literal of ``value`` (None, bool, int, float, str, date, aware datetime)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no BigQuery literal for {value!r}")
        return f"CAST({value!r} AS FLOAT64)"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no instant; give it a time zone")
        return f"TIMESTAMP '{value.astimezone(UTC).isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        escaped = (value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
                   .replace("\r", "\\r"))
        return f"'{escaped}'"
    raise TypeError(f"no BigQuery literal for a {type(value).__name__}")


def feature_expression(feature: Feature) -> str:
    """The feature's value over one state row: its bq_sql, the default for a null, its declared type."""
    if not feature.bq_sql:
        raise OfflineQueryFailed(f"feature {feature.name!r} has no bq_sql in the catalog, so it cannot be "
                                 "computed offline; add one next to its compute function",
                                 code="feature_without_bq_sql")
    expr = f"({feature.bq_sql.format(at='at_s', day='at_day')})"
    if feature.default is not None:
        expr = f"COALESCE({expr}, {literal(feature.default)})"
    return f"CAST({expr} AS {BQ_TYPES[feature.dtype]})"


def features_sql(feature_set: FeatureSet, dataset: str, requests_sql: str, keep: Sequence[str]) -> str:
    """A SELECT of ``keep`` (columns of the requests) and every feature of the set, one row per request.

    ``requests_sql`` is a query with the columns req_id, user_id and as_of (TIMESTAMP) and every
    name in ``keep``. The statement calls py_round: run it in a script that starts with PY_ROUND.
    """
    kept = [f"r.{identifier(k)}" for k in keep]
    values = [f"{feature_expression(f)} AS {identifier(f.name)}" for f in feature_set.features]
    state = state_template().format(dataset=identifier(dataset), requests="requests")
    return (f"WITH requests AS (\n{requests_sql}\n),\nstate AS (\n{state}\n)\n"
            f"SELECT {', '.join(kept + values)}\nFROM state AS s\nJOIN requests AS r ON r.req_id = s.req_id")


def feature_columns(feature_set: FeatureSet) -> list[tuple[str, str]]:
    """(name, BigQuery type) of each feature of the set, in catalog order."""
    return [(f.name, BQ_TYPES[f.dtype]) for f in feature_set.features]


def script(*statements: str) -> str:
    """One BigQuery script: py_round, then the statements."""
    return "\n".join([PY_ROUND, *(s.rstrip().rstrip(";") + ";" for s in statements)])
