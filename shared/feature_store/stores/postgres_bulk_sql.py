"""The bulk refresh statement on PostgreSQL, derived from the one definition of a state (user_state.sql).

sql/queries/user_state.sql marks four blocks (``-- <name>:begin`` ... ``-- <name>:end``). Bulk refresh
on PostgreSQL keeps everything else of it - every source, filter, join and scalar expression - and
replaces:

- ``tx``, ``recent``, ``lists``: by the sections of sql/queries/user_state_bulk.postgresql.sql (the
  same values: totals in one pass, the event lists as the binary body's columns instead of JSON);
- ``columns``: by one column, ``body``: the cached binary body (docs/redis-keys.md) packed in SQL from
  the columns block's own expressions, field by field as the state's declaration says
  (domain/state.py, domain/state_binary.py). A user whose state the binary body cannot hold gets a
  NULL body (every check of ``state_binary.pack`` has its SQL twin below, or is stricter), and
  the caller computes that user through the point read instead.

So a chunk crosses the wire as ids and finished bodies, and Python only prefixes the watermark.
tests/integration/test_refresh_source.py holds every user's bytes equal to what the point read's
state encodes to.
"""

from __future__ import annotations

import json
import re
from functools import cache

from feature_store.domain.state import LAYOUT, STATE_FIELDS, StateField
from feature_store.domain.state_binary import MAX_LIST, NULL_H, NULL_I
from feature_store.stores.sql_files import query, select_items

_BLOCK = re.compile(r"^-- (\w+):begin\n(.*?)^-- \1:end\n", re.S | re.M)
_SECTION = re.compile(r"^-- \[(\w+)\]\n", re.M)
_NAN = "'\\x7ff8000000000000'::bytea"  # float8send('NaN'): what struct packs Python's nan as


def _sections() -> dict[str, str]:
    text = query("user_state_bulk.postgresql")
    parts = _SECTION.split(text)
    return {parts[i]: parts[i + 1].rstrip() + "\n" for i in range(1, len(parts), 2)}


# Each field of the head is an integer expression (NULL when the value does not fit) or, for an
# epoch, eight bytes. Written to cost the least per row - numeric arithmetic, casts, function calls and
# bytea concatenations are what is dear: a scaled value must have no more decimals than its scale
# (scale(), then one multiplication), an epoch must lie between the infinities, a vocabulary is a
# jsonb object (a binary search, not a scan), and consecutive integers are packed into one bigint
# (shifts) sent as 8 bytes, cut to their width.
def _u16(e: str, nullable: bool, scale: int | None = None) -> str:
    null = f"WHEN ({e}) IS NULL THEN {NULL_H} " if nullable else ""
    if scale is None:
        return f"CASE {null}WHEN ({e}) >= 0 AND ({e}) < {NULL_H} THEN CAST({e} AS bigint) END"
    return (f"CASE {null}WHEN scale({e}) <= {len(str(scale)) - 1} AND ({e}) >= 0 AND ({e}) < {NULL_H / scale} "
            f"THEN CAST(({e}) * {scale} AS bigint) END")


def _u32_cents(e: str, nullable: bool) -> str:
    null = f"WHEN ({e}) IS NULL THEN {NULL_I} " if nullable else ""
    return (f"CASE {null}WHEN scale({e}) <= 2 AND ({e}) >= 0 AND ({e}) < {NULL_I / 100} "
            f"THEN CAST(({e}) * 100 AS bigint) END")


def _epoch(e: str, nullable: bool) -> str:
    null = f"WHEN ({e}) IS NULL THEN {_NAN} " if nullable else ""
    return (f"CASE {null}WHEN ({e}) > '-Infinity' AND ({e}) < 'Infinity' "
            f"THEN float8send(CAST({e} AS double precision)) END")


def _text(e: str, f: StateField) -> str:
    assert f.vocab is not None
    positions = json.dumps({w: i + 1 for i, w in enumerate(f.vocab)}).replace("'", "''")
    return (f"CASE WHEN ({e}) IS NULL THEN 0 "
            f"ELSE CAST(CAST('{positions}' AS jsonb) ->> CAST({e} AS text) AS bigint) END")


def _count(n: str) -> str:
    return f"CAST(COALESCE({n}, 0) AS bigint)"


def _packed(run: list[tuple[int, str]]) -> str:
    """Consecutive integer fields (width in bytes, expression) as one big-endian bytea of their widths."""
    total = sum(w for w, _ in run)
    shift, terms = total * 8, []
    for width, expr in run:
        shift -= width * 8
        terms.append(f"(({expr}) << {shift})" if shift else f"({expr})")
    sent = f"int8send({' | '.join(terms)})"
    return sent if total == 8 else f"substring({sent} FROM {9 - total})"


# The event lists' columns in the sections: (count, checks that must hold, column parts, tail).
_LISTS = {
    "orders": ("recent.recent_n", [f"COALESCE(recent.recent_max * 100 < {NULL_I}, TRUE)"],
               ["recent.recent_at", "recent.recent_cents"], "recent.recent_merchants"),
    "epochs": ("inst.late_n", ["COALESCE(inst.late_finite, TRUE)"], ["inst.late_at"], None),
    "unpaid": ("inst.unpaid_n", [f"COALESCE(inst.unpaid_max * 100 < {NULL_I}, TRUE)",
                                 "COALESCE(inst.unpaid_first >= DATE '1970-01-01', TRUE)",
                                 f"COALESCE(inst.unpaid_last < DATE '1970-01-01' + {NULL_H}, TRUE)"],
               ["inst.unpaid_days", "inst.unpaid_cents"], None),
}


def _body(columns: dict[str, str]) -> str:
    """The binary body of layout 3 as one SQL expression over the columns block's expressions."""
    head: list[str] = [f"'\\x{LAYOUT:02x}'::bytea"]
    run: list[tuple[int, str]] = []  # the integers waiting to be packed together
    checks: list[str] = []
    lists: list[str] = []
    tail: str | None = None

    def integer(width: int, expr: str) -> None:
        if sum(w for w, _ in run) + width > 8:
            head.append(_packed(run))
            run.clear()
        run.append((width, expr))

    for f in STATE_FIELDS:
        if f.kind in _LISTS:
            count, must, parts, last = _LISTS[f.kind]
            integer(1, _count(count))
            checks += [f"COALESCE({count}, 0) <= {MAX_LIST}", *must]
            lists += [f"COALESCE({p}, ''::bytea)" for p in parts]
            tail = last or tail
            continue
        e = columns[f.name]
        if f.kind == "epoch":
            if run:
                head.append(_packed(run))
                run.clear()
            head.append(_epoch(e, f.nullable))
        elif f.kind in ("int", "day"):
            integer(2, _u16(e, f.nullable))
        elif f.kind == "float" and f.scale == 100:
            integer(4, _u32_cents(e, f.nullable))
        elif f.kind == "float" and f.scale == 1000:
            integer(2, _u16(e, f.nullable, 1000))
        elif f.kind == "text":
            integer(1, _text(e, f))
        else:
            raise ValueError(f"no SQL packing for state field {f.name} ({f.kind}, scale {f.scale})")
    if run:
        head.append(_packed(run))
    parts = [*head, *lists] + ([f"COALESCE({tail}, ''::bytea)"] if tail else [])
    return f"CASE WHEN {' AND '.join(checks)} THEN\n         " + "\n      || ".join(parts) + "\n       END"


@cache
def bulk_statement() -> str:
    """user_state.sql with its marked blocks replaced; format with ``scope`` and ``scope_u`` like it."""
    text = query("user_state")
    sections = _sections()
    blocks = {m.group(1): m for m in _BLOCK.finditer(text)}
    if set(blocks) != {"tx", "recent", "lists", "columns"}:
        raise ValueError(f"sql/queries/user_state.sql marks {sorted(blocks)}; bulk refresh needs tx, recent, "
                         "lists and columns")
    columns = select_items(blocks["columns"].group(2))
    if list(columns) != [f.name for f in STATE_FIELDS]:
        raise ValueError("the columns block of sql/queries/user_state.sql is not the state's fields in order")
    replacement = {**{name: sections[name] for name in ("tx", "recent", "lists")},
                   "columns": "       " + _body(columns).replace("{", "{{").replace("}", "}}") + " AS body\n"}
    return _BLOCK.sub(lambda m: replacement[m.group(1)], text)
