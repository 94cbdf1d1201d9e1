"""A reader of the CREATE TABLE statements in sql/bigquery/: columns, partitioning, clustering.

Shared by the tests that hold the DDL against the catalog and mirror specs (unit/test_bq_ddl.py)
and against Terraform's table schemas (infra/test_terraform.py). Types are the DDL's own names,
uppercased, without parameters; each caller maps the aliases its comparison needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

_CREATE = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?([\w.${}-]+)`?\s*\(",
                     re.IGNORECASE)


class DdlTable(NamedTuple):
    columns: dict[str, tuple[str, str]]  # name => (type, mode)
    partition: str | None
    cluster: list[str]


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in body:
        depth += {"(": 1, "<": 1, ")": -1, ">": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def ddl_tables(files: Iterable[Path]) -> dict[str, DdlTable]:
    """Every CREATE TABLE of ``files`` by table name (comments dropped)."""
    out: dict[str, DdlTable] = {}
    for path in files:
        text = re.sub(r"--[^\n]*", "", path.read_text())
        for match in _CREATE.finditer(text):
            depth, i = 1, match.end()
            while depth and i < len(text):
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            columns = {}
            for part in _split_top_level(text[match.end() : i - 1]):
                words = part.split()
                if len(words) >= 2 and words[0].upper() not in {"PRIMARY", "FOREIGN", "CONSTRAINT"}:
                    mode = "REQUIRED" if re.search(r"\bNOT\s+NULL\b", part, re.IGNORECASE) else "NULLABLE"
                    kind = words[1]
                    if kind.upper().startswith("ARRAY<"):  # ARRAY<T> is Terraform's T in mode REPEATED
                        kind, mode = kind[6:], "REPEATED"
                    columns[words[0].strip("`")] = (re.split(r"[(<>]", kind)[0].upper(), mode)
            tail = text[i : text.find(";", i) if ";" in text[i:] else len(text)]
            partition = re.search(r"PARTITION\s+BY\s+(?:DATE\s*\(\s*)?(\w+)", tail, re.IGNORECASE)
            cluster = re.search(r"CLUSTER\s+BY\s+([\w\s,]+)", tail, re.IGNORECASE)
            out[match.group(1).split(".")[-1]] = DdlTable(
                columns,
                partition.group(1) if partition else None,
                [c.strip() for c in cluster.group(1).split(",")] if cluster else [],
            )
    return out
