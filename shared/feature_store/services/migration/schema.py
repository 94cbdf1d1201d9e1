"""The CockroachDB form of the schema, derived from sql/postgres by the rules of docs/cockroachdb.md.

Each numbered PostgreSQL migration becomes a migration of the same number whose statements follow
these rules, and every statement the rules change is reported as a ``Difference``:

- no declarative partitions: ``PARTITION BY RANGE`` goes (CockroachDB splits ranges itself), and so
  does fs-migrate's monthly partition maintenance;
- keys that distribute: a table listed in ``DISTRIBUTED_KEYS`` gets that primary key (transactions:
  ``(user_id, created_at, transaction_id)``, so a user's rows sit together and new rows spread over
  users instead of piling onto the newest time), and a unique index keeps the source's own key unique;
  an index whose first column is a timestamp (always-growing values: every insert would land on the
  last range) becomes hash-sharded (``USING HASH``); an index the new primary key already covers goes;
- ``STORING`` instead of ``INCLUDE``;
- no ``REPLICA IDENTITY``: changefeeds carry whole rows (``diff`` adds the old one).

``form="postgresql"`` renders the same derived schema as far as PostgreSQL accepts it (``INCLUDE``
for ``STORING``, plain indexes for hash-sharded ones): the migration's tests use it for the target,
since no CockroachDB server can run where they run. This module only transforms text; it does no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from feature_store.services.migrations import Migration, load_migrations
from feature_store.stores.sql_files import sql_root

Form = Literal["cockroachdb", "postgresql"]

# table -> (new primary key, why)
DISTRIBUTED_KEYS: dict[str, tuple[tuple[str, ...], str]] = {
    "transactions": (("user_id", "created_at", "transaction_id"),
                     "rows of one user sit together (the per-user aggregation reads one range) and new rows "
                     "spread over every user instead of the newest time"),
}

# Not rewritten, but true of CockroachDB and worth knowing before applying the derived schema.
NOTES: tuple[tuple[str, str], ...] = (
    ("CREATE FUNCTION ... LANGUAGE plpgsql, CREATE TRIGGER",
     "PL/pgSQL functions and triggers need CockroachDB v24.3 or later (the derived schema keeps them)"),
    ("fs-migrate partition maintenance", "not run for cockroachdb (Dialect.partitions_transactions = False)"),
    ("pg_advisory_lock in fs-migrate", "accepted as a no-op by recent CockroachDB versions: run migrations from "
                                       "one place (the run_migration prepare phase)"),
    ("users.user_id", "kept as the primary key as it is: bulk refresh reads id ranges, and the ids are not "
                      "issued in time order by the application (the generator's are; hash-shard them if yours are)"),
)


@dataclass(frozen=True)
class Difference:
    """One statement of sql/postgres that the CockroachDB form changes, drops or adds."""

    migration: str  # file name, e.g. 0001_core_tables.sql
    subject: str  # table or index
    postgresql: str  # the statement (or clause) as sql/postgres has it; "" when added
    cockroachdb: str  # what the CockroachDB form has instead; "" when dropped
    reason: str


@dataclass(frozen=True)
class DerivedSchema:
    migrations: list[Migration]
    differences: list[Difference]


# --- splitting ----------------------------------------------------------------------------------


def split_statements(sql: str) -> list[str]:
    """The statements of a file, each with its leading comments, without the terminating semicolons.

    Semicolons inside quotes, ``--`` comments and ``$$`` bodies do not end a statement.
    """
    out: list[str] = []
    start, i, n = 0, 0, len(sql)
    while i < n:
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif sql.startswith("$$", i):
            end = sql.find("$$", i + 2)
            i = n if end < 0 else end + 2
        elif sql[i] == "'":
            end = sql.find("'", i + 1)
            i = n if end < 0 else end + 1
        elif sql[i] == ";":
            out.append(sql[start:i])
            start = i = i + 1
        else:
            i += 1
    if sql[start:].strip() and _strip_comments(sql[start:]):
        out.append(sql[start:])
    return [s for s in out if _strip_comments(s)]


def _strip_comments(statement: str) -> str:
    return "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", text)).strip()


# --- statements ---------------------------------------------------------------------------------

_CREATE_TABLE = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?(?P<name>\w+) \((?P<body>.*)\)[^()]*$",
                           re.S | re.I)
_PARTITION = re.compile(r"\s*PARTITION BY RANGE \((?P<col>\w+)\)\s*$", re.I)
_PK = re.compile(r"PRIMARY KEY \((?P<cols>[^)]*)\)", re.I)
_INDEX = re.compile(r"^CREATE (?P<unique>UNIQUE )?INDEX (?P<name>\w+) ON (?P<table>\w+) \((?P<cols>[^)]*)\)"
                    r"(?: INCLUDE \((?P<include>[^)]*)\))?(?P<where> WHERE .*)?$", re.I)
_REPLICA_IDENTITY = re.compile(r"^ALTER TABLE (?P<table>\w+) REPLICA IDENTITY \w+$", re.I)
_ADD_COLUMN = re.compile(r"^ALTER TABLE (?P<table>\w+) ADD COLUMN (?P<col>\w+) (?P<type>\w+)", re.I)
_TIMESTAMP_TYPES = {"timestamptz", "timestamp"}


def _columns(body: str) -> dict[str, str]:
    """Column name -> lower-case type name of a CREATE TABLE body (constraints skipped)."""
    out: dict[str, str] = {}
    for raw in _flat(body).split(","):
        parts = raw.strip().split()
        if len(parts) >= 2 and parts[0].upper() not in ("PRIMARY", "CONSTRAINT", "UNIQUE", "CHECK", "FOREIGN"):
            out[parts[0]] = parts[1].lower().split("(")[0]
    return out


def _names(cols: str) -> list[str]:
    return [c.strip().split()[0] for c in cols.split(",") if c.strip()]


@dataclass
class _Catalog:
    """What the rules need to know about the tables seen so far."""

    types: dict[str, dict[str, str]]
    keys: dict[str, tuple[str, ...]]  # tables whose primary key was replaced -> the new key


def _render_index(unique: str, name: str, table: str, cols: str, include: str | None, where: str | None,
                  hashed: bool, form: Form) -> str:
    text = f"CREATE {unique}INDEX {name} ON {table} ({cols})"
    if hashed and form == "cockroachdb":
        text += " USING HASH"
    if include:
        text += f" {'STORING' if form == 'cockroachdb' else 'INCLUDE'} ({include})"
    return text + (where or "")


def _derive_statement(statement: str, file: str, catalog: _Catalog,
                      form: Form) -> Iterator[tuple[str, Difference | None]]:
    flat = _flat(statement)
    if m := _REPLICA_IDENTITY.match(flat):
        yield "", Difference(file, m.group("table"), flat, "",
                             "REPLICA IDENTITY is not a CockroachDB concept: a changefeed WITH diff carries the "
                             "old row")
        return
    if m := _ADD_COLUMN.match(flat):
        catalog.types.setdefault(m.group("table"), {})[m.group("col")] = m.group("type").lower()
    if m := _CREATE_TABLE.match(flat):
        yield from _derive_table(statement, flat, m, file, catalog)
        return
    if m := _INDEX.match(flat):
        yield from _derive_index(flat, m, file, catalog, form)
        return
    yield statement.strip(), None


def _derive_table(statement: str, flat: str, m: re.Match[str], file: str,
                  catalog: _Catalog) -> Iterator[tuple[str, Difference | None]]:
    name, body = m.group("name"), m.group("body")
    part = _PARTITION.search(flat)
    if part:
        body = body[: body.rfind(")", 0, len(body) - len(part.group(0)))]
    catalog.types[name] = _columns(body)
    text = _strip_comments(statement)
    if part:
        text = re.sub(r"\s*PARTITION BY RANGE\s*\(\w+\)\s*$", "", text, flags=re.I)
        partition_note = Difference(file, name, part.group(0).strip(), "",
                                    "declarative partitions do not exist in CockroachDB, which splits and "
                                    "distributes ranges itself")
    else:
        partition_note = None
    if name in DISTRIBUTED_KEYS:
        key, why = DISTRIBUTED_KEYS[name]
        old = _PK.search(text)
        if old is None:
            raise ValueError(f"{file}: {name} has no table-level PRIMARY KEY to redistribute")
        new = f"PRIMARY KEY ({', '.join(key)})"
        text = text[: old.start()] + new + text[old.end():]
        catalog.keys[name] = key
        source_key = old.group("cols")
        yield text, Difference(file, name, old.group(0), new, why)
        if partition_note:
            yield "", partition_note
        unique = f"CREATE UNIQUE INDEX {name}_source_key ON {name} ({source_key})"
        yield unique, Difference(file, f"{name}_source_key", "", unique,
                                 f"the source's own key ({source_key}) stays unique, as it is in PostgreSQL; "
                                 "the replication upserts on it")
        return
    yield (text if partition_note else statement.strip()), partition_note


def _derive_index(flat: str, m: re.Match[str], file: str, catalog: _Catalog,
                  form: Form) -> Iterator[tuple[str, Difference | None]]:
    table, name, cols = m.group("table"), m.group("name"), m.group("cols")
    key_cols = _names(cols)
    new_key = catalog.keys.get(table)
    if new_key is not None and tuple(key_cols) == new_key[: len(key_cols)]:
        yield "", Difference(file, name, flat, "",
                             f"the primary key ({', '.join(new_key)}) already orders {table} this way and stores "
                             "every column")
        return
    hashed = catalog.types.get(table, {}).get(key_cols[0]) in _TIMESTAMP_TYPES
    include = m.group("include")
    derived = _render_index(m.group("unique") or "", name, table, cols, include, m.group("where"), hashed, form)
    reasons = []
    if hashed:
        reasons.append(f"{key_cols[0]} only grows: a hash-sharded index spreads its inserts over ranges "
                       "instead of the last one")
    if include:
        reasons.append("CockroachDB spells covering columns STORING")
    rendered_ddb = _render_index(m.group("unique") or "", name, table, cols, include, m.group("where"), hashed,
                                 "cockroachdb")
    yield derived, (Difference(file, name, flat, rendered_ddb, "; ".join(reasons)) if reasons else None)


# --- the derived schema -------------------------------------------------------------------------


def derive(migrations: Sequence[Migration], form: Form = "cockroachdb") -> DerivedSchema:
    """The CockroachDB form of ``migrations`` (numbered sql/postgres files), and every difference."""
    catalog = _Catalog({}, {})
    out: list[Migration] = []
    differences: list[Difference] = []
    for m in migrations:
        statements: list[str] = []
        for statement in split_statements(m.sql):
            for text, difference in _derive_statement(statement, m.filename, catalog, form):
                if text:
                    statements.append(text)
                if difference is not None:
                    differences.append(difference)
        header = (f"-- Derived from sql/postgres/{m.filename} for CockroachDB ({form} rendering) by "
                  "services/migration/schema.py.\n")
        out.append(Migration(m.version, m.name, header + ";\n\n".join(statements) + (";\n" if statements else "")))
    return DerivedSchema(out, differences)


def report(schema: DerivedSchema) -> str:
    """The compatibility report: every difference between sql/postgres and its CockroachDB form, then notes."""
    lines = ["# Compatibility report: sql/postgres -> CockroachDB", ""]
    for d in schema.differences:
        if not d.cockroachdb:
            change = "dropped"
        elif not d.postgresql:
            change = "added"
        else:
            change = "changed"
        lines += [f"- {d.migration} {d.subject}: {change}",
                  *([f"    postgresql:  {d.postgresql}"] if d.postgresql else []),
                  *([f"    cockroachdb: {d.cockroachdb}"] if d.cockroachdb else []),
                  f"    why: {d.reason}"]
    lines += ["", f"{len(schema.differences)} differences; unchanged statements are shared as they are.", "",
              "Notes:"]
    lines += [f"- {subject}: {note}" for subject, note in NOTES]
    return "\n".join(lines) + "\n"


# fs-migrate --form: what to apply. "source" is sql/postgres as it is (with monthly partitions).
FORMS: dict[str, Form | None] = {"source": None, "cockroachdb": "cockroachdb",
                                  "cockroachdb-on-postgresql": "postgresql"}


def form_for(dialect: str) -> Form:
    """How the target schema is rendered for a target of this dialect."""
    return "cockroachdb" if dialect == "cockroachdb" else "postgresql"


def target_schema(dialect: str) -> DerivedSchema:
    """The CockroachDB form of sql/postgres, rendered for a target of ``dialect``."""
    return derive(load_migrations(sql_root() / "postgres"), form_for(dialect))
