"""Point-in-time training tables in BigQuery: labels staged, checked and joined with the catalog's features.

Labels live in a staging table of their own, numbered (``label_row``); the features of each row are
computed as of its decision time from the mirrors (stores/bigquery_features.py) in chunks of label
rows, which bound each statement's memory, and the finished table replaces the destination.
"""

from __future__ import annotations

import csv
import secrets
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from feature_store.domain.catalog import FeatureSet
from feature_store.stores.bigquery_features import features_sql, identifier, literal, script
from feature_store.stores.bigquery_offline import OfflineStore

LabelValues = tuple[int, str, datetime, str]  # label_row, user_id, decision_time, label


@dataclass(frozen=True)
class LabelProblem:
    """One offending label row of one problem, and how many rows have that problem."""

    problem: str
    row: int
    user_id: str | None
    decision_time: datetime | None
    count: int


class TrainingStore:
    """The BigQuery side of training sets."""

    def __init__(self, offline: OfflineStore, tmp_dir: str | None = None) -> None:
        self.offline = offline
        self.tmp_dir = tmp_dir

    def full_name(self, name: str) -> str:
        """The quoted ``dataset.table`` of a name given as ``table`` (this dataset) or ``dataset.table``."""
        return f"`{name}`" if "." in name else self.offline.table(name)

    def columns(self, table: str) -> dict[str, str] | None:
        return self.offline.columns(table)

    def rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        """Every row of a (training) table, ordered by a column of it."""
        return self.offline.run(f"SELECT * FROM {self.full_name(table)} ORDER BY {identifier(order_by)}")

    @contextmanager
    def staged_labels(self, rows: Sequence[LabelValues], label_type: str) -> Iterator[str]:
        """A staging table holding these label rows (dropped afterwards)."""
        staging = f"_labels_{secrets.token_hex(6)}"
        with tempfile.NamedTemporaryFile("w", suffix=".csv", dir=self.tmp_dir, newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["label_row", "user_id", "decision_time", "label"])
            writer.writerows([row, user_id, at.isoformat(), label] for row, user_id, at, label in rows)
            out.flush()
            try:
                self.offline.load_csv(Path(out.name), staging, [("label_row", "INT64"), ("user_id", "STRING"),
                                                                ("decision_time", "TIMESTAMP"), ("label", label_type)])
                yield staging
            finally:
                self.offline.drop_table(staging)

    @contextmanager
    def labels_of_table(self, source: str) -> Iterator[str]:
        """A staging table numbering the rows of a label table (by time, then user; dropped afterwards)."""
        staging = f"_labels_{secrets.token_hex(6)}"
        try:
            self.offline.run(
                f"CREATE TABLE {self.offline.table(staging)} AS SELECT ROW_NUMBER() OVER "
                "(ORDER BY decision_time, user_id) AS label_row, CAST(user_id AS STRING) AS user_id, "
                "SAFE_CAST(decision_time AS TIMESTAMP) AS decision_time, label "
                f"FROM {self.full_name(source)}")
            yield staging
        finally:
            self.offline.drop_table(staging)

    def label_problems(self, staging: str, now: datetime, shown: int) -> list[LabelProblem]:
        """Rows with a missing value, a future time or a user the mirror lacks: the first ``shown`` of each."""
        labels, users = self.offline.table(staging), self.offline.table("users")
        found = self.offline.run(f"""
            SELECT problem, label_row, user_id, decision_time, COUNT(*) OVER (PARTITION BY problem) AS n
            FROM (
              SELECT 'miss a value (or hold a decision_time that is not a timestamp)' AS problem,
                     label_row, user_id, decision_time FROM {labels}
              WHERE user_id IS NULL OR decision_time IS NULL OR label IS NULL
              UNION ALL
              SELECT 'have a decision_time in the future', label_row, user_id, decision_time FROM {labels}
              WHERE decision_time > @now
              UNION ALL
              SELECT 'name a user the offline store does not know', l.label_row, l.user_id, l.decision_time
              FROM {labels} AS l LEFT JOIN {users} AS u ON u.user_id = l.user_id
              WHERE l.user_id IS NOT NULL AND u.user_id IS NULL
            )
            WHERE TRUE
            QUALIFY ROW_NUMBER() OVER (PARTITION BY problem ORDER BY label_row) <= {int(shown)}
            ORDER BY problem, label_row""", {"now": now})
        return [LabelProblem(r["problem"], int(r["label_row"]), r["user_id"], r["decision_time"], int(r["n"]))
                for r in found]

    def build(self, staging: str, fs: FeatureSet, destination: str, chunk: int) -> tuple[str, int | None]:
        """Replace ``destination`` with the features of every staged label row; (table, rows), rows None if none."""
        target = self.full_name(destination)
        names = ", ".join(identifier(f.name) for f in fs.features)
        last = int(self.offline.run(f"SELECT MAX(label_row) AS n FROM {self.offline.table(staging)}")[0]["n"] or 0)
        if last == 0:
            return target.strip("`"), None
        building = f"_training_{secrets.token_hex(6)}"
        try:
            for lo in range(1, last + 1, chunk):
                requests = ("SELECT label_row AS req_id, user_id, decision_time AS as_of, label_row, decision_time, "
                            f"label FROM {self.offline.table(staging)} "
                            f"WHERE label_row BETWEEN {lo} AND {lo + chunk - 1}")
                select = features_sql(fs, self.offline.dataset, requests,
                                      ["label_row", "user_id", "decision_time", "label"])
                into = (f"CREATE TABLE {self.offline.table(building)} AS" if lo == 1
                        else f"INSERT INTO {self.offline.table(building)}")
                self.offline.run(script(
                    f"{into}\nSELECT label_row, user_id, decision_time, label, {literal(fs.name)} AS feature_set, "
                    f"{fs.version} AS feature_set_version, {names}\nFROM (\n{select}\n)"))
            self.offline.run(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {self.offline.table(building)}")
        finally:
            self.offline.drop_table(building)
        rows = int(self.offline.run(f"SELECT COUNT(*) AS n FROM {target}")[0]["n"])
        return target.strip("`"), rows
