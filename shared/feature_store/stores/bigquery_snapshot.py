"""The daily feature snapshot in BigQuery: every user's features as of one instant, replacing that day's rows.

The features come from the catalog's BigQuery SQL over the mirrors (stores/bigquery_features.py).
Chunks of users (by id) bound each statement's memory; the day's rows are then replaced in one
transaction, so readers see the old day or the new one, never a part.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import date, datetime

from feature_store.domain.catalog import FeatureSet
from feature_store.stores.bigquery_features import features_sql, literal, script
from feature_store.stores.bigquery_offline import OfflineStore


class SnapshotWriter:
    """Writes ``feature_snapshots`` rows of one day and one feature set version."""

    def __init__(self, offline: OfflineStore) -> None:
        self.offline = offline

    def user_bounds(self, as_of: datetime, chunk: int) -> list[str]:
        """The first user id of each chunk of ``chunk`` users who existed at ``as_of``, in order."""
        rows = self.offline.run(
            f"SELECT user_id FROM (SELECT user_id, ROW_NUMBER() OVER (ORDER BY user_id) AS n "
            f"FROM {self.offline.table('users')} WHERE created_at <= @as_of) "
            "WHERE MOD(n - 1, @chunk) = 0 ORDER BY user_id", {"as_of": as_of, "chunk": chunk})
        return [str(r["user_id"]) for r in rows]

    def replace_day(self, fs: FeatureSet, day: date, as_of: datetime, run_id: str, chunk: int,
                    progress: Callable[[int, int], None]) -> int:
        """Compute the day's rows chunk by chunk (``progress(done, chunks)`` after each), swap them in; count them."""
        target = self.offline.table("feature_snapshots")
        names = [f.name for f in fs.features]
        marks = self.offline.watermarks()
        columns = ["snapshot_date", "user_id", "feature_set", "feature_set_version", "as_of", "source_watermark",
                   "computed_at", "etl_run_id", *names]
        values = [literal(day), "user_id", literal(fs.name), str(fs.version), "as_of",
                  literal(json.dumps(marks, sort_keys=True)), "CURRENT_TIMESTAMP()", literal(run_id), *names]
        this_day = (f"snapshot_date = {literal(day)} AND feature_set = {literal(fs.name)} "
                    f"AND feature_set_version = {fs.version}")
        staging = self.offline.table(f"_snapshot_{secrets.token_hex(6)}")
        bounds = self.user_bounds(as_of, chunk)
        try:
            for i, lo in enumerate(bounds):
                scope = f"user_id >= {literal(lo)}" + (f" AND user_id < {literal(bounds[i + 1])}"
                                                      if i + 1 < len(bounds) else "")
                requests = (f"SELECT user_id AS req_id, user_id, {literal(as_of)} AS as_of "
                            f"FROM {self.offline.table('users')} WHERE created_at <= {literal(as_of)} AND {scope}")
                select = (f"SELECT {', '.join(f'{v} AS {c}' for v, c in zip(values, columns, strict=True))} FROM (\n"
                          f"{features_sql(fs, self.offline.dataset, requests, ['user_id', 'as_of'])}\n)")
                into = f"CREATE TABLE {staging} AS\n" if i == 0 else f"INSERT INTO {staging} ({', '.join(columns)})\n"
                self.offline.run(script(into + select))
                progress(i + 1, len(bounds))
            land = (f"INSERT INTO {target} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {staging}"
                    if bounds else "SELECT 0")
            self.offline.run(f"BEGIN TRANSACTION;\nDELETE FROM {target} WHERE {this_day};\n{land};\n"
                             "COMMIT TRANSACTION;")
        finally:
            self.offline.drop_table(staging.strip("`").split(".")[-1])
        return int(self.offline.run(f"SELECT COUNT(*) AS n FROM {target} WHERE {this_day}")[0]["n"])
