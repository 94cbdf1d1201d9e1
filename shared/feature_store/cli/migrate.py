"""fs-migrate: apply the numbered migrations in sql/postgres (or their CockroachDB form) and keep partitions ahead.

    fs-migrate [up] [--months-back N] [--months-ahead M] [--form F]   apply pending files, then partitions
    fs-migrate status [--form F]                                    list applied and pending files
    fs-migrate report                                               the CockroachDB compatibility report

The form follows FS_POSTGRES_DIALECT: ``source`` (sql/postgres as it is, monthly partitions of
transactions) for postgresql, ``cockroachdb`` (derived by services/migration/schema.py, no partitions)
for cockroachdb. ``--form cockroachdb-on-postgresql`` applies the CockroachDB form as far as PostgreSQL
accepts it (a rehearsal target: the migration's tests and the local stack use it).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from feature_store.cli.runner import run_cli
from feature_store.services.migration.schema import FORMS, derive, report
from feature_store.services.migrations import ensure_partitions, load_migrations, migrate, month_start
from feature_store.settings import Settings
from feature_store.stores.postgres import PostgresPool
from feature_store.stores.sql_files import sql_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fs-migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="up", choices=["up", "status", "report"])
    parser.add_argument("--months-back", type=int, default=24, help="partitions for past months (default 24)")
    parser.add_argument("--months-ahead", type=int, default=3, help="partitions for future months (default 3)")
    parser.add_argument("--sql-dir", type=Path, default=None, help="folder of the numbered files "
                        "(default: sql/postgres)")
    parser.add_argument("--form", choices=sorted(FORMS), default=None,
                        help="schema form (default: source for postgresql, cockroachdb for cockroachdb)")
    args = parser.parse_args(argv)

    def body() -> int:
        files = load_migrations(args.sql_dir or sql_root() / "postgres")
        if args.command == "report":
            print(report(derive(files, "cockroachdb")), end="")
            return 0
        settings = Settings.from_env()
        form = FORMS[args.form or ("cockroachdb" if settings.postgres.dialect == "cockroachdb" else "source")]
        migrations = files if form is None else derive(files, form).migrations
        pool = PostgresPool(settings.postgres, bulk=True)
        try:
            with pool.connection() as conn:
                if args.command == "status":
                    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                                 "name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL "
                                 "DEFAULT now())")
                    done = {int(r[0]) for r in conn.run("SELECT version FROM schema_migrations")}
                    for m in migrations:
                        print(f"{'applied' if m.version in done else 'pending'}  {m.filename}")
                    return 0
                result = migrate(conn, migrations)
                created: list[str] = []
                if form is None:  # only the source form has declarative partitions
                    today = datetime.now(UTC).date()
                    created = ensure_partitions(conn, month_start(today, -args.months_back),
                                                month_start(today, args.months_ahead))
        finally:
            pool.close()
        for name in result.applied:
            print(f"applied  {name}")
        print(f"{len(result.applied)} applied, {len(result.already)} already applied, "
              f"{len(created)} partitions created")
        return 0

    return run_cli("fs-migrate", body)


if __name__ == "__main__":
    sys.exit(main())
