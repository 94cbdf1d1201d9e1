"""Locates the SQL files: the repository's ``sql/`` or the copy bundled into a deploy folder."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


@cache
def sql_root() -> Path:
    """``feature_store/_sql`` when packaged for deployment, else the repository's ``sql/``."""
    for candidate in (_PACKAGE / "_sql", _PACKAGE.parent.parent / "sql"):
        if (candidate / "postgres").is_dir():
            return candidate
    raise FileNotFoundError("no sql/ directory beside the feature_store package")


@cache
def query(name: str) -> str:
    """The text of ``sql/queries/<name>.sql``."""
    return (sql_root() / "queries" / f"{name}.sql").read_text()


def select_items(select_list: str) -> dict[str, str]:
    """``{output name: expression}`` of a SELECT list: top-level commas, ``expr AS name`` or ``t.name``."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(select_list):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(select_list[start:i])
            start = i + 1
    items.append(select_list[start:])
    out = {}
    for item in (" ".join(x.split()) for x in items):
        named = re.search(r"^(.*)\s+AS\s+(\w+)$", item)
        expr, name = (named.group(1), named.group(2)) if named else (item, item.rsplit(".", 1)[-1])
        out[name] = expr
    return out
