"""Schema migrations: numbered SQL files applied once, in order, each in its own transaction.

The runner records every applied file with its checksum in ``schema_migrations``. It refuses
to do anything when an applied file has since changed or disappeared (the database no longer
matches the repository), checking all files before it applies the first one. It also keeps
monthly partitions of ``transactions`` ahead of time.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from feature_store.errors import MigrationError
from feature_store.logs import get_logger
from feature_store.stores.postgres import Connection

log = get_logger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 7_301_557_002  # pg_advisory_lock key: one runner at a time

_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def load_migrations(directory: Path) -> list[Migration]:
    """The numbered files of ``directory`` in order; a stray or duplicate number is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_case.sql",
                                 code="migration_bad_name")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations are numbered {version:04d}", code="migration_duplicate")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    already: list[str]


def migrate(conn: Connection, migrations: list[Migration]) -> MigrationReport:
    """Apply the pending migrations; verify the applied ones first and change nothing on a mismatch."""
    conn.execute(_LEDGER)
    conn.run("SELECT pg_advisory_lock(:k)", k=_LOCK_KEY)
    try:
        recorded = {int(v): (str(n), str(c)) for v, n, c in
                    conn.run("SELECT version, name, checksum FROM schema_migrations ORDER BY version")}
        by_version = {m.version: m for m in migrations}
        for version, (name, checksum) in recorded.items():
            current = by_version.get(version)
            if current is None:
                raise MigrationError(
                    f"migration {version:04d}_{name}.sql was applied but is no longer in the repository; "
                    "nothing was changed", code="migration_missing")
            if current.checksum != checksum:
                raise MigrationError(
                    f"migration {current.filename} changed after it was applied "
                    f"(applied sha256 {checksum[:12]}, file now {current.checksum[:12]}); "
                    "write a new migration instead of editing an applied one; nothing was changed",
                    code="migration_changed")
        applied: list[str] = []
        for m in migrations:
            if m.version in recorded:
                continue
            conn.execute("BEGIN")
            try:
                conn.execute(m.sql)
                conn.run("INSERT INTO schema_migrations (version, name, checksum) VALUES (:v, :n, :c)",
                         v=m.version, n=m.name, c=m.checksum)
                conn.execute("COMMIT")
            except Exception:
                conn.execute("ROLLBACK")
                raise
            log.info("applied migration", extra={"fields": {"migration": m.filename}})
            applied.append(m.filename)
        return MigrationReport(applied=applied,
                               already=[m.filename for m in migrations if m.version in recorded])
    finally:
        conn.run("SELECT pg_advisory_unlock(:k)", k=_LOCK_KEY)


def month_start(d: date, shift: int = 0) -> date:
    """The first day of the month ``shift`` months after the month of ``d``."""
    index = d.year * 12 + (d.month - 1) + shift
    return date(index // 12, index % 12 + 1, 1)


def ensure_partitions(conn: Connection, first: date, last: date) -> list[str]:
    """Create the monthly partitions of ``transactions`` covering ``first``..``last`` that are missing."""
    existing = {r[0] for r in conn.run(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'transactions'")}
    created: list[str] = []
    month = month_start(first)
    while month <= last:
        name = f"transactions_{month:%Y_%m}"
        if name not in existing:
            upper = month_start(month, 1)
            # REPLICA IDENTITY is per relation: a partition does not inherit its parent's.
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF transactions "
                f"FOR VALUES FROM ('{month.isoformat()}') TO ('{upper.isoformat()}'); "
                f"ALTER TABLE {name} REPLICA IDENTITY FULL"
            )
            created.append(name)
        month = month_start(month, 1)
    return created
