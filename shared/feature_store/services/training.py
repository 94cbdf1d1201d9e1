"""Point-in-time training sets: the features of each labelled decision as they were at its time.

Labels are rows (user_id, decision_time, label) in a CSV or NDJSON file or a BigQuery table.
They are checked before anything is built, and a bad label set raises ``InvalidLabels`` naming
the offending rows (the first ten of each problem and how many there are): missing columns or
values, timestamps that do not parse or lie in the future, users the offline store does not know.
The training table then holds, per label row, every feature of the chosen feature set version
computed in BigQuery from rows whose event time is at or before the decision time, by the
catalog's definitions (stores/bigquery_features.py; docs/offline.md lists what the mirrors
cannot know about the past).
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feature_store.domain.catalog import get_feature_set
from feature_store.errors import Conflict, InvalidLabels, InvalidParameter
from feature_store.stores.bigquery_training import TrainingStore

LABEL_COLUMNS = ("user_id", "decision_time", "label")
_SHOWN = 10
_TABLE = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]{0,1023}\.)?[A-Za-z_][A-Za-z0-9_]{0,1023}")
_INT = re.compile(r"[+-]?\d{1,18}")


@dataclass(frozen=True)
class LabelRow:
    row: int  # 1-based position among the data rows (the header is not counted)
    user_id: str
    decision_time: datetime
    label: str


class _Problems:
    """Offending rows collected by problem, reported together."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}

    def add(self, problem: str, where: str) -> None:
        self.counts[problem] = self.counts.get(problem, 0) + 1
        shown = self.found.setdefault(problem, [])
        if len(shown) < _SHOWN:
            shown.append(where)

    def raise_any(self, source: str) -> None:
        if not self.counts:
            return
        parts = []
        for problem, count in self.counts.items():
            more = count - len(self.found[problem])
            rows = ", ".join(self.found[problem]) + (f" and {more} more" if more else "")
            parts.append(f"{count} {'row' if count == 1 else 'rows'} {problem}: {rows}")
        raise InvalidLabels(f"the labels in {source} cannot be used; " + "; ".join(parts))


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant; one without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _records(path: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The column names and the data rows of a CSV or NDJSON file."""
    if path.suffix.lower() == ".csv":
        handle = open(path, newline="")  # noqa: SIM115 - closed when the reader is exhausted
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])

        def rows() -> Iterator[dict[str, Any]]:
            with handle:
                yield from reader

        return columns, rows()
    if path.suffix.lower() in {".ndjson", ".jsonl", ".json"}:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        records = []
        for n, line in enumerate(lines, start=1):
            try:
                value = json.loads(line)
            except ValueError:
                raise InvalidLabels(f"{path.name}: row {n} is not a JSON object") from None
            if not isinstance(value, dict):
                raise InvalidLabels(f"{path.name}: row {n} is not a JSON object")
            records.append(value)
        present = set(LABEL_COLUMNS).intersection(*(r.keys() for r in records)) if records else set()
        return [c for c in LABEL_COLUMNS if c in present], iter(records)
    raise InvalidLabels(f"{path.name}: labels come as .csv or .ndjson (one JSON object per line)")


def read_labels(path: Path, now: datetime) -> tuple[list[LabelRow], str]:
    """The label rows of a file and the BigQuery type of its labels; InvalidLabels naming every bad row."""
    if not path.is_file():
        raise InvalidLabels(f"no labels file at {path}")
    columns, records = _records(path)
    missing = [c for c in LABEL_COLUMNS if c not in columns]
    if missing:
        raise InvalidLabels(f"{path.name} has no column {', '.join(map(repr, missing))}; label files need the "
                            f"columns {', '.join(LABEL_COLUMNS)} (every row, for NDJSON)")
    return check_labels(records, path.name, now)


def check_labels(records: Iterable[Mapping[str, Any]], source: str, now: datetime) -> tuple[list[LabelRow], str]:
    """Label rows from records with the label columns, and the BigQuery type of their labels.

    InvalidLabels names every row that misses a value or whose decision_time does not parse or lies
    after ``now`` (rows are numbered from 1 in the order given).
    """
    problems = _Problems()
    rows: list[LabelRow] = []
    for n, record in enumerate(records, start=1):
        user_id, raw_time, label = (record.get(c) for c in LABEL_COLUMNS)
        empty = [c for c, v in zip(LABEL_COLUMNS, (user_id, raw_time, label), strict=True) if v in (None, "")]
        if empty:
            problems.add("miss a value", f"row {n} ({', '.join(empty)})")
            continue
        try:
            moment = parse_time(str(raw_time))
        except ValueError:
            problems.add("have a decision_time that is not an ISO 8601 instant", f"row {n} ({str(raw_time)[:40]!r})")
            continue
        if moment > now:
            problems.add(f"have a decision_time in the future (after {now.isoformat()})",
                         f"row {n} ({user_id}, {moment.isoformat()})")
            continue
        rows.append(LabelRow(n, str(user_id), moment, str(label)))
    problems.raise_any(source)
    if not rows:
        raise InvalidLabels(f"{source} holds no label rows")
    return rows, _label_type([r.label for r in rows])


def _label_type(labels: list[str]) -> str:
    if all(_INT.fullmatch(v) for v in labels):
        return "INT64"
    try:
        for v in labels:
            float(v)
    except ValueError:
        return "STRING"
    return "FLOAT64"


# Tables and views of the offline store itself (sql/bigquery/): a training set never replaces one.
_OWN = re.compile(r"(users|transactions|risk_scores|installment_plans|installments|feature_snapshots|etl_\w+"
                  r"|changelog_\w+|_stage_\w+|_snapshot_\w+|_labels_\w+|_training_\w+)", re.IGNORECASE)


def _table_name(name: str, error: type[InvalidLabels | InvalidParameter]) -> str:
    if not _TABLE.fullmatch(name):
        raise error(f"{name[:64]!r} is not a BigQuery table name (table, or dataset.table)")
    return name


def _destination(name: str) -> str:
    """A table name a training set may be written to: never one of the offline store's own tables."""
    _table_name(name, InvalidParameter)
    if "." not in name and _OWN.fullmatch(name):
        raise InvalidParameter(f"{name!r} is a table of the offline store itself; choose another destination",
                               code="reserved_table")
    return name


class TrainingSets:
    """Builds point-in-time training tables in the offline store."""

    def __init__(self, store: TrainingStore, feature_set: str, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), chunk: int = 50_000) -> None:
        self.store = store
        self.feature_set = feature_set
        self._chunk = chunk
        self._clock = clock
        self._now = now

    def from_file(self, path: Path, destination: str, version: int | None = None) -> dict[str, Any]:
        """Build ``destination`` from a label file."""
        started = self._clock()
        rows, label_type = read_labels(path, self._now())
        return self._from_rows(rows, label_type, path.name, destination, version, started)

    def from_records(self, records: Sequence[Mapping[str, Any]], destination: str, version: int | None = None,
                     with_rows: bool = False) -> dict[str, Any]:
        """Build ``destination`` from label records given in a request (``with_rows``: answer the rows too)."""
        started = self._clock()
        rows, label_type = check_labels(records, "the request", self._now())
        report = self._from_rows(rows, label_type, "the request", destination, version, started)
        if with_rows:
            report["results"] = self.store.rows(destination, order_by="label_row")
        return report

    def _require_export(self) -> None:
        if self.store.columns("users") is None:
            raise Conflict("the offline store holds no export yet; run the ETL export first",
                           code="bigquery_not_exported")

    def _from_rows(self, rows: list[LabelRow], label_type: str, source: str, destination: str,
                   version: int | None, started: float) -> dict[str, Any]:
        _destination(destination)
        self._require_export()
        with self.store.staged_labels([(r.row, r.user_id, r.decision_time, r.label) for r in rows],
                                      label_type) as staging:
            return self._build(staging, source, destination, version, started)

    def from_table(self, source: str, destination: str, version: int | None = None) -> dict[str, Any]:
        """Build ``destination`` from a BigQuery table with the label columns (``table`` or ``dataset.table``)."""
        started = self._clock()
        _destination(destination)
        self._require_export()
        columns = self.store.columns(_table_name(source, InvalidLabels))
        if columns is None:
            raise InvalidLabels(f"there is no table {source} with labels")
        missing = [c for c in LABEL_COLUMNS if c not in columns]
        if missing:
            raise InvalidLabels(f"table {source} has no column {', '.join(map(repr, missing))}; label tables need "
                                f"the columns {', '.join(LABEL_COLUMNS)}")
        with self.store.labels_of_table(source) as staging:
            return self._build(staging, source, destination, version, started)

    def _check(self, staging: str, source: str) -> None:
        """InvalidLabels for rows with a missing value, a future time or a user the mirror lacks."""
        problems = _Problems()
        for found in self.store.label_problems(staging, self._now(), _SHOWN):
            when = found.decision_time.isoformat() if found.decision_time else "no time"
            problems.found.setdefault(found.problem, []).append(f"row {found.row} ({found.user_id}, {when})")
            problems.counts[found.problem] = found.count
        problems.raise_any(source)

    def _build(self, staging: str, source: str, destination: str, version: int | None,
               started: float) -> dict[str, Any]:
        self._check(staging, source)
        fs = get_feature_set(self.feature_set, version)
        target, rows = self.store.build(staging, fs, destination, self._chunk)
        if rows is None:
            raise InvalidLabels(f"{source} holds no label rows")
        return {"table": target, "rows": rows, "feature_set": fs.name, "version": fs.version,
                "seconds": round(self._clock() - started, 3)}
