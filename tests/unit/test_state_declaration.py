"""The state's one declaration (domain/state.py) and the SQL that computes it agree."""

from __future__ import annotations

import dataclasses
import typing

from feature_store.domain import state as state_module
from feature_store.domain.state import LAYOUT, STATE_BQ_COLUMNS, STATE_COLUMNS, STATE_FIELDS, UserState
from feature_store.stores.sql_files import select_items, sql_root


def test_every_body_field_is_declared_with_a_kind() -> None:
    declared = [f.name for f in dataclasses.fields(UserState)]
    assert declared[:3] == ["user_id", "watermark", "computed_at"]
    assert [f.name for f in STATE_FIELDS] == declared[2:]
    kinds = set(typing.get_args(state_module.Kind))
    assert all(f.kind in kinds for f in STATE_FIELDS)
    assert ("user_id", *declared[2:]) == STATE_COLUMNS


def test_the_bigquery_statement_produces_the_declared_columns_in_order() -> None:
    text = (sql_root() / "bigquery" / "queries" / "user_state_asof.sql").read_text()
    final = text[text.rindex("\nSELECT r.req_id"):]
    select_list = final[len("\nSELECT "):final.index("\nFROM req AS r")]
    names = list(select_items(select_list))
    assert [n for n in names if n in STATE_BQ_COLUMNS] == list(STATE_BQ_COLUMNS)
    assert set(names) - set(STATE_BQ_COLUMNS) == {"req_id", "as_of", "at_day"}  # the request, for the features


def test_the_encoding_is_flat_and_starts_with_the_layout() -> None:
    s = UserState("u1", 7, 1.0, total_orders=2, recent_orders=((1.0, 2.0, "m"),))
    encoded = s.to_compact()
    assert encoded[0] == LAYOUT and len(encoded) == 1 + len(STATE_FIELDS)
    assert encoded[1 + [f.name for f in STATE_FIELDS].index("total_orders")] == 2
    assert UserState.from_compact("u1", 7, encoded) == s
