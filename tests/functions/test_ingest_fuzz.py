"""Property: no message content makes ingest_changes answer 4xx or 5xx while its stores are up.

Random bytes, random JSON, and random JSON shaped like Debezium's messages and CockroachDB
changefeed messages (tests/producers.py cites their documented forms), pushed through the function
served by functions-framework in the three push shapes, against real PostgreSQL and Redis. A shaped
message is sometimes a valid change of a random user, which is then recomputed and written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Databases, base_env, function_client
from feature_store.domain.changes import TABLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from producers import push

SHAPES = st.sampled_from(["binary", "structured", "raw"])
TABLE_NAMES = st.sampled_from([*TABLES, *TABLES, "transactions_2026_11", "feature_store.public.users",
                               "users.primary", "cdc-changes", "audit_log", ""]) | st.text(max_size=12)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=16)
           | st.sampled_from(["infinity", "-infinity", "NaN", "Infinity", "AAAE4g==", "BOI=", "1250", "12.50",
                              "2026-11-02T10:00:00Z", "2026-11-02", "1701102296662969433.0000000002",
                              "u000000001", "u000000002", "\x00", "\ud800"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
HLC = st.builds(lambda wall, logical: f"{wall}.{logical:010d}", st.integers(0, 2**63), st.integers(0, 2**33))


def mostly(valid: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four: shaped messages must often get past the first check."""
    return st.integers(0, 3).flatmap(lambda n: junk if n == 3 else valid)


VALID = {  # values each column kind can really have, in Debezium's and CockroachDB's encodings
    "text": mostly(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)
                   | st.sampled_from(["u000000001", "u000000002", "completed", "t1"]),
                   st.text(max_size=8) | st.sampled_from(["u\x00x", "u\ud800", "x" * 65])),  # text PostgreSQL refuses
    "int": st.integers(0, 150),
    "decimal": st.decimals("0", "1", places=3).map(str) | st.sampled_from(["AAAE4g==", "BOI=", "AA=="])
    | st.decimals("0", "1", places=3).map(float),
    "date": st.integers(-1000, 3_000_000) | st.dates().map(lambda d: d.isoformat()) | st.just("infinity"),
    "timestamp": st.datetimes().map(lambda t: t.isoformat() + "Z") | st.sampled_from(["infinity", "-infinity"]),
}


def valid_row(table: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({name: VALID[col.kind] for name, col in TABLES[table].by_name.items()})


def rows(table: Any) -> st.SearchStrategy[Any]:
    """A row of ``table``: mostly one a producer could write, sometimes with garbage in it."""
    if table not in TABLES:
        return st.none() | JSON
    columns = TABLES[table].by_name
    valid = valid_row(table)
    spoiled = st.builds(lambda row, name, junk: {**row, name: junk}, valid, st.sampled_from([*columns, "extra"]),
                        SCALARS | JSON)
    return mostly(st.none() | valid, spoiled | JSON)


@st.composite
def debezium_shaped(draw: st.DrawFn) -> Any:
    table = draw(mostly(st.sampled_from(list(TABLES)), TABLE_NAMES))
    kind = draw(st.sampled_from(["valid", "change", "change", "heartbeat", "transaction"]))
    if kind == "valid" and table in TABLES:  # a well-formed change, its values drawn from VALID
        op = draw(st.sampled_from(["c", "u", "d", "r"]))
        image = draw(valid_row(table))
        return {"op": op, "source": {"table": table, "lsn": draw(st.integers(0, 2**40)), "ts_ms": 1_793_000_000_000},
                "before": image if op in "ud" else None, "after": None if op == "d" else image}
    if kind == "heartbeat":
        payload: Any = {"ts_ms": draw(SCALARS)}
    elif kind == "transaction":
        payload = {"status": draw(st.sampled_from(["BEGIN", "END"]) | SCALARS), "id": draw(SCALARS),
                   "event_count": draw(SCALARS), "data_collections": draw(JSON), "ts_ms": draw(SCALARS)}
    else:
        source = st.fixed_dictionaries({
            "table": mostly(st.just(table), SCALARS),
            "lsn": mostly(st.integers(0, 2**40), st.integers(-1, 2**65) | SCALARS),
            "ts_ms": mostly(st.integers(0, 2**42), SCALARS),
            "txId": mostly(st.none() | st.integers(0, 2**31), SCALARS)})
        transaction = st.fixed_dictionaries({"id": SCALARS, "total_order": SCALARS})
        op = mostly(st.sampled_from(["c", "u", "d", "r"]), st.sampled_from(["t", "m", "x"]) | SCALARS)
        payload = {"op": draw(op),
                   "source": draw(mostly(source, JSON)), "before": draw(rows(table)), "after": draw(rows(table)),
                   "transaction": draw(mostly(st.none(), transaction))}
    if draw(st.booleans()):
        schema = st.fixed_dictionaries({"name": SCALARS, "fields": st.lists(st.fixed_dictionaries(
            {"field": st.sampled_from(["before", "after"]) | SCALARS, "fields": JSON}), max_size=3) | JSON})
        envelope = st.just({"type": "struct", "name": f"fs.public.{table}.Envelope", "fields": []})
        return {"schema": draw(mostly(envelope, schema | JSON)), "payload": draw(mostly(st.just(payload), JSON))}
    return payload


@st.composite
def changefeed_shaped(draw: st.DrawFn) -> Any:
    table = draw(mostly(st.sampled_from(list(TABLES)), TABLE_NAMES))
    kind = draw(st.sampled_from(["valid", "noisy", "noisy", "resolved"]))
    if kind == "valid" and table in TABLES:
        after = draw(st.none() | valid_row(table))
        return {"Key": draw(st.lists(VALID["text"], min_size=1, max_size=3)), "Topic": table,
                "Value": {"after": after, "updated": draw(HLC)}}
    if kind == "resolved":
        resolved = draw(HLC | SCALARS)
        return {"resolved": resolved} if draw(st.booleans()) else {"__crdb__": {"resolved": resolved}}
    meta = draw(st.dictionaries(st.sampled_from(["updated", "mvcc_timestamp", "key", "topic"]), HLC | JSON))
    if draw(st.booleans()):
        value: Any = {"after": draw(rows(table)), **meta}
        if draw(st.booleans()):
            value["before"] = draw(rows(table))
    else:
        image = draw(rows(table))
        value = {**(image if isinstance(image, dict) else {}), "__crdb__": meta if draw(st.booleans()) else draw(JSON)}
    names = draw(st.sampled_from([("Key", "Value", "Topic"), ("key", "value", "topic")]))
    key = mostly(st.lists(VALID["text"], min_size=1, max_size=3), st.lists(SCALARS, max_size=3) | JSON)
    return dict(zip(names, (draw(key), value, draw(mostly(st.just(table), SCALARS))), strict=True))


MESSAGES = (st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode())
            | debezium_shaped().map(lambda v: json.dumps(v).encode())
            | changefeed_shaped().map(lambda v: json.dumps(v).encode()))
ATTRIBUTES = st.dictionaries(st.sampled_from(["TABLE_NAME", "key", "x"]), TABLE_NAMES, max_size=2)


@pytest.fixture(scope="module")
def fuzz_database(databases: Databases) -> str:
    return databases.create()


@pytest.fixture
def app(fuzz_database: str, redis_prefix: str, use_env: Callable[[dict[str, str]], None]) -> Any:
    use_env({**base_env(fuzz_database, redis_prefix), "FS_CDC_CHANGELOG_ENABLED": "false",
             "FS_REDIS_SOCKET_TIMEOUT_MS": "2000", "FS_CDC_REDIS_TIMEOUT_MS": "10000"})  # a loaded machine
    return function_client("ingest_changes")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=MESSAGES | st.none(), shape=SHAPES, attributes=ATTRIBUTES)
def test_no_message_content_answers_4xx_or_5xx(app: Any, data: bytes | None, shape: str,
                                              attributes: dict[str, str]) -> None:
    response = push(app, shape, data, "fuzz-1", attributes)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]

