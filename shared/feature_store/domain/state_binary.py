"""The binary body of a cached state (layout 3), generated from the state's declaration (domain/state.py).

About half the bytes of the JSON list it replaces, and no slower to read: one ``struct`` unpack of a
fixed head, then the event lists as columns (one unpack each) zipped back into tuples in C. Exact
by construction: a float is held as an integer number of 1/scale (cents, thousandths) or as the
IEEE double itself (epochs), a text as its position in the field's vocabulary. A state that does
not fit - a value off its scale, a text outside its vocabulary, a count past its width, a merchant
containing NUL - has no binary body (``pack`` returns None) and is cached as the JSON list instead.

Body, big-endian (docs/redis-keys.md; pinned by tests/unit/test_redis_layout.py):

    B       the layout number (3)
    head    every field in declaration order:
              epoch            d   IEEE double; NaN for null
              int, day         H   0..65534; 65535 for null
              float, scale 100 I   0..2**32-2 hundredths; 2**32-1 for null
              float, scale 1000 H  0..65534 thousandths; 65535 for null
              text             B   1 + position in the vocabulary; 0 for null
              orders, epochs, unpaid  B   how many elements (at most 255)
    lists   in declaration order, each column whole:
              orders   count x d (at), count x I (amount in cents)
              epochs   count x d
              unpaid   count x H (due day), count x I (amount in cents)
    tail    the orders' merchants, UTF-8, separated by NUL (nothing when there is no order)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from feature_store.domain.state import LAYOUT, STATE_FIELDS, StateField, UserState

NULL_H = 0xFFFF
NULL_I = 0xFFFF_FFFF
MAX_LIST = 255

_SCALED = {100: ("I", NULL_I), 1000: ("H", NULL_H)}


def _head_code(f: StateField) -> str:
    if f.kind == "epoch":
        return "d"
    if f.kind in ("int", "day"):
        return "H"
    if f.kind == "float":
        if f.scale not in _SCALED:
            raise ValueError(f"state field {f.name}: a float needs a scale of {sorted(_SCALED)} to be packed")
        return _SCALED[f.scale][0]
    if f.kind == "text":
        if not f.vocab:
            raise ValueError(f"state field {f.name}: a text needs a vocabulary to be packed")
        return "B"
    return "B"  # a list: its length


HEAD = struct.Struct(">B" + "".join(_head_code(f) for f in STATE_FIELDS))


def _columns(code: str) -> tuple[struct.Struct, ...]:
    """``code`` repeated 0..MAX_LIST times: one Struct per list length, built once."""
    return tuple(struct.Struct(f">{n}{code}") for n in range(MAX_LIST + 1))


_D, _H, _I = _columns("d"), _columns("H"), _columns("I")
_VOCABS = {f.name: (None, *f.vocab) for f in STATE_FIELDS if f.kind == "text" and f.vocab}
_INDEX = {name: {v: i for i, v in enumerate(values)} for name, values in _VOCABS.items()}  # None -> 0
_CENTS = (100).__rtruediv__  # c -> c / 100 in C: the double nearest the decimal amount, as float("12.50") is


def _packer() -> Callable[[UserState], bytes | None]:
    """``pack(state)``: the binary body, or None when a value does not fit (see the module docstring).

    Generated once from the declaration, like ``unpack``: bulk refresh packs tens of thousands of
    states per second. Every check is exact: a float must be a float (an int would come back as a
    float) and must come back equal from its scaled integer; a count or day must be an int in range.
    """
    lines = ["def pack(s):"]
    head, lists, merchants = [str(LAYOUT)], [], "b''"  # a declaration without orders has no tail
    for i, f in enumerate(STATE_FIELDS):
        v = f"v{i}"
        lines.append(f"    {v} = s.{f.name}")
        null_ok = f"{v} is None or " if f.nullable else ""
        if f.kind == "epoch":
            lines.append(f"    if not ({null_ok}type({v}) is float and {v} - {v} == 0):")
            lines.append("        return None")
            head.append(f"(_NAN if {v} is None else {v})" if f.nullable else v)
        elif f.kind in ("int", "day"):
            lines.append(f"    if not ({null_ok}type({v}) is int and 0 <= {v} < {NULL_H}):")
            lines.append("        return None")
            head.append(f"({NULL_H} if {v} is None else {v})" if f.nullable else v)
        elif f.kind == "float":
            assert f.scale is not None
            null = _SCALED[f.scale][1]
            lines += [f"    if {v} is None:" if f.nullable else "    if False:", f"        n{i} = {null}",
                      "    else:", f"        if type({v}) is not float or not 0 <= {v} < {null / f.scale}:",
                      "            return None",
                      f"        n{i} = round({v} * {f.scale})",
                      f"        if n{i} / {f.scale} != {v}:", "            return None"]
            head.append(f"n{i}")
        elif f.kind == "text":
            lines.append(f"    n{i} = _IX_{f.name}.get({v}, -1)")
            lines += [f"    if n{i} < 0:", "        return None"]
            head.append(f"n{i}")
        else:
            lines += [f"    n{i} = len({v})", f"    if n{i} > {MAX_LIST}:", "        return None"]
            head.append(f"n{i}")
            if f.kind == "orders":
                lines += [f"    if n{i}:", f"        t{i} = [o[0] for o in {v}]",
                          f"        a{i} = [o[1] for o in {v}]", f"        m{i} = [o[2] for o in {v}]",
                          f"        c{i} = _cents(a{i})",
                          f"        if c{i} is None or not _epochs(t{i}) or not _names(m{i}):",
                          "            return None",
                          f"        l{i} = _D[n{i}].pack(*t{i}) + _I[n{i}].pack(*c{i})",
                          f"        x{i} = '\\0'.join(m{i}).encode()", "    else:", f"        l{i} = x{i} = b''"]
                merchants = f"x{i}"
            elif f.kind == "epochs":
                lines += [f"    if n{i}:", f"        if not _epochs({v}):", "            return None",
                          f"        l{i} = _D[n{i}].pack(*{v})", "    else:", f"        l{i} = b''"]
            else:
                lines += [f"    if n{i}:", f"        d{i} = [u[0] for u in {v}]",
                          f"        c{i} = _cents([u[1] for u in {v}])",
                          f"        if c{i} is None or not _days(d{i}):", "            return None",
                          f"        l{i} = _H[n{i}].pack(*d{i}) + _I[n{i}].pack(*c{i})", "    else:",
                          f"        l{i} = b''"]
            lists.append(f"l{i}")
    lines.append(f"    return _pack_head({', '.join(head)}) + {' + '.join([*lists, merchants])}")
    scope: dict[str, Any] = {"_pack_head": HEAD.pack, "_D": _D, "_H": _H, "_I": _I, "_NAN": math.nan,
                             "_cents": _cents, "_epochs": _epochs, "_days": _days, "_names": _names,
                             **{f"_IX_{name}": index for name, index in _INDEX.items()}}
    # The source is this module's fixed expressions over the declaration, never input data.
    exec(compile("\n".join(lines), "<state pack>", "exec"), scope)
    return scope["pack"]  # type: ignore[no-any-return]


# The list checks run once per bulk-refreshed user: written with map() so that the loops run in C.
_FLOAT, _INT, _STR = {float}, {int}, {str}
_TIMES_100 = (100.0).__mul__


def _cents(amounts: list[Any]) -> list[int] | None:
    """Amounts as whole cents, or None unless every one is a float that many cents exactly, in range."""
    if set(map(type, amounts)) != _FLOAT:
        return None
    cents = list(map(round, map(_TIMES_100, amounts)))
    if list(map(_CENTS, cents)) != amounts or min(cents) < 0 or max(cents) >= NULL_I:
        return None
    return cents


def _epochs(values: Any) -> bool:
    return set(map(type, values)) == _FLOAT and all(map(math.isfinite, values))


def _days(values: list[Any]) -> bool:
    return set(map(type, values)) == _INT and min(values) >= 0 and max(values) < NULL_H


def _names(values: list[Any]) -> bool:
    return set(map(type, values)) == _STR and "\0" not in "".join(values)


_pack = _packer()


def pack(s: UserState) -> bytes | None:
    """The binary body of ``s`` (layout byte first), or None when it cannot hold ``s`` exactly."""
    try:
        return _pack(s)
    except (TypeError, ValueError, struct.error):  # a value of a type no state field has
        return None


def _unpacker() -> Callable[[str, int, bytes, int], UserState]:
    """``unpack(user_id, watermark, raw, start)``: the state whose body starts at ``raw[start]``.

    Generated once, as the state's other mappers are: a loop over the fields costs several times
    more on the read path, which decodes a hundred states per batch. Raises on a body that is not
    exactly one state (a wrong length, a vocabulary position that does not exist).
    """
    lines = ["def unpack(user_id, watermark, raw, start):",
             f"    _layout, {', '.join(f'h{i}' for i in range(len(STATE_FIELDS)))} = _head(raw, start)",
             f"    if _layout != {LAYOUT}:",
             "        raise ValueError('layout')",
             f"    p = start + {HEAD.size}"]
    values, merchants = [], None
    for i, f in enumerate(STATE_FIELDS):
        h = f"h{i}"
        if f.kind == "epoch":
            values.append(f"(None if {h} != {h} else {h})" if f.nullable else h)
        elif f.kind in ("int", "day"):
            values.append(f"(None if {h} == {NULL_H} else {h})" if f.nullable else h)
        elif f.kind == "float":
            assert f.scale is not None
            null = _SCALED[f.scale][1]
            expr = f"{h} / {f.scale}"
            values.append(f"(None if {h} == {null} else {expr})" if f.nullable else expr)
        elif f.kind == "text":
            values.append(f"_V_{f.name}[{h}]")
        elif f.kind == "orders":
            lines += [f"    if {h}:", f"        t{i} = _D[{h}].unpack_from(raw, p)", f"        p += 8 * {h}",
                      f"        c{i} = _I[{h}].unpack_from(raw, p)", f"        p += 4 * {h}"]
            merchants = (i, h)
            values.append(f"v{i}")
        elif f.kind == "epochs":
            lines += [f"    if {h}:", f"        v{i} = _D[{h}].unpack_from(raw, p)", f"        p += 8 * {h}",
                      "    else:", f"        v{i} = ()"]
            values.append(f"v{i}")
        else:
            lines += [f"    if {h}:", f"        d{i} = _H[{h}].unpack_from(raw, p)", f"        p += 2 * {h}",
                      f"        v{i} = tuple(zip(d{i}, map(_CENTS, _I[{h}].unpack_from(raw, p))))",
                      f"        p += 4 * {h}", "    else:", f"        v{i} = ()"]
            values.append(f"v{i}")
    if merchants is not None:
        # The merchants are the tail: where it starts is known only once every column is read, so the
        # orders are zipped with them last.
        i, h = merchants
        tail = [f"    if {h}:", f"        m{i} = raw[p:].decode().split('\\0')", f"        if len(m{i}) != {h}:",
                "            raise ValueError('length')", f"        v{i} = tuple(zip(t{i}, map(_CENTS, c{i}), m{i}))",
                "    elif p != len(raw):", "        raise ValueError('length')", "    else:", f"        v{i} = ()"]
        lines += tail
    else:
        lines += ["    if p != len(raw):", "        raise ValueError('length')"]
    lines.append(f"    return UserState(user_id, watermark, {', '.join(values)})")
    scope: dict[str, Any] = {"UserState": UserState, "_head": HEAD.unpack_from, "_D": _D, "_H": _H, "_I": _I,
                             "_CENTS": _CENTS, **{f"_V_{name}": v for name, v in _VOCABS.items()}}
    # The source is this module's fixed expressions over the declaration, never input data.
    exec(compile("\n".join(lines), "<state unpack>", "exec"), scope)
    return scope["unpack"]  # type: ignore[no-any-return]


unpack: Callable[[str, int, bytes, int], UserState] = _unpacker()
