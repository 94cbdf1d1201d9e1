"""The offline ETL: incremental export PostgreSQL -> BigQuery, the daily feature snapshot, run records.

Export: per mirrored table (stores/bigquery_mirror.py), rows whose modification time is at or
after the table's watermark minus ``overlap_s`` and at most the source's clock at the start of
the call are read in keyset pages, written to a CSV file, loaded into a staging table and merged
into the mirror; the watermark then moves to the last row merged. Invariants: a watermark moves
only after its rows are merged, never backwards, so a failed batch leaves it where it was and a
re-run merges the same rows again with no duplicates; the overlap re-reads rows committed late
with an older timestamp (the MERGE makes the re-read harmless). A call stops starting batches
after ``step_budget_s`` and answers ``done: false``; the workflow calls again.

Snapshot: the features of every user as of the end of a UTC day, computed in BigQuery from the
catalog (stores/bigquery_features.py), replacing that day's rows in one transaction.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import InvalidParameter
from feature_store.logs import get_logger
from feature_store.settings import EtlSettings
from feature_store.stores.bigquery_mirror import MIRRORED, MirrorBatch, MirrorTable
from feature_store.stores.bigquery_offline import OfflineStore
from feature_store.stores.bigquery_snapshot import SnapshotWriter
from feature_store.stores.postgres_export import ExportSource, keyset_position, start_position

log = get_logger(__name__)

_ONE_MICROSECOND = timedelta(microseconds=1)


def new_run_id(now: datetime) -> str:
    """A fresh run id: sortable by time, unique by its random tail."""
    return f"etl-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def parse_watermark(text: str) -> datetime:
    """A watermark (ISO 8601 with Z) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def format_watermark(moment: datetime) -> str:
    """The watermark text of an instant: fixed width, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class TableExport:
    """What one export call did to one table."""

    rows: int = 0
    batches: int = 0
    watermark: str | None = None  # after the call's last batch (None: nothing landed)
    done: bool = False
    seconds: float = 0.0


class Etl:
    """The ETL steps of workflows/etl.yaml, each one HTTP call of run_etl."""

    def __init__(self, source: ExportSource, offline: OfflineStore, settings: EtlSettings,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.source = source
        self.offline = offline
        self.settings = settings
        self._clock = clock
        self._now = now
        self._schema_ready = False

    def feature_set(self) -> FeatureSet:
        return get_feature_set(self.settings.feature_set, self.settings.feature_set_version)

    def ensure_schema(self) -> None:
        """Apply sql/bigquery/ once per instance (every statement is idempotent)."""
        if not self._schema_ready:
            self.offline.ensure_schema()
            self._schema_ready = True

    # --- export -------------------------------------------------------------------------------

    def export(self, run_id: str | None = None, full: bool = False) -> dict[str, Any]:
        """Export what changed since each table's watermark (``full``: everything), within the budget.

        The first call of a run fixes its plan in the run's record: per table the lower bound
        (watermark minus overlap), the source clock as the upper bound, and the refresh request.
        Later calls of the run resume each table exactly after the last row merged.
        """
        started = self._clock()
        deadline = started + self.settings.step_budget_s
        run_id = run_id or new_run_id(self._now())
        self.ensure_schema()
        record = self.offline.run_record(run_id)
        steps: dict[str, Any] = record["steps"] if record else {}
        plan: dict[str, Any] = steps.get("export") or self._plan(full)
        steps["export"] = plan
        plan["calls"] = int(plan.get("calls", 0)) + 1
        tables: dict[str, TableExport] = {}
        for table in MIRRORED:
            progress = plan["tables"][table.name]
            if progress["done"]:
                continue
            # Out of time, but only once this call has landed a batch: every call makes progress.
            if any(t.batches for t in tables.values()) and self._clock() > deadline:
                break
            tables[table.name] = self._export_table(table, progress, plan["upper"], run_id, deadline,
                                                    lambda: self._save(run_id, steps))
            if not progress["done"]:
                break
        plan["done"] = all(p["done"] for p in plan["tables"].values())
        self._save(run_id, steps)
        rows = sum(t.rows for t in tables.values())
        seconds = round(self._clock() - started, 3)
        log.info("export call finished", extra={"fields": {"run_id": run_id, "rows": rows, "done": plan["done"],
                                                           "seconds": seconds}})
        return {"run_id": run_id, "step": "export", "done": plan["done"], "rows": rows, "seconds": seconds,
                "tables": {n: asdict(t) for n, t in tables.items()}, "materialize": plan["materialize"]}

    def _plan(self, full: bool) -> dict[str, Any]:
        marks = {} if full else self.offline.watermarks()
        overlap = timedelta(seconds=self.settings.overlap_s)

        def lower(mark: str | None) -> str:
            return "-infinity" if mark is None else format_watermark(parse_watermark(mark) - overlap)

        return {"upper": self.source.now(), "materialize": self._materialize_request(full), "rows": 0,
                "tables": {t.name: {"lo": lower(marks.get(t.name)), "after": None, "done": False, "rows": 0}
                           for t in MIRRORED}}

    def _save(self, run_id: str, steps: dict[str, Any]) -> None:
        plan = steps["export"]
        plan["rows"] = sum(int(p["rows"]) for p in plan["tables"].values())
        self.offline.save_run(run_id, "running", steps, rows_loaded=plan["rows"])

    def _materialize_request(self, full: bool) -> dict[str, Any]:
        """The refresh_cache request of a run: incremental since the last good run, else full."""
        last = None if full else self.offline.last_run("succeeded")
        upper = (last or {}).get("steps", {}).get("export", {}).get("upper")
        if not upper:
            return {"mode": "full"}
        since = parse_watermark(upper) - timedelta(seconds=self.settings.overlap_s)
        return {"mode": "incremental", "since": format_watermark(since)}

    def _export_table(self, table: MirrorTable, progress: dict[str, Any], upper: str, run_id: str,
                      deadline: float, save: Callable[[], None]) -> TableExport:
        """Export one table from its saved position until done or out of time; ``progress`` is updated."""
        result = TableExport()
        began = self._clock()
        after: list[str] = progress["after"] or start_position(table, progress["lo"])
        try:
            with (self.source.pages(table, upper) as read,
                  MirrorBatch(self.offline, table, self.settings.tmp_dir) as batch):
                while True:
                    page = read(after, self.settings.chunk_rows)
                    if page:
                        batch.add(page)
                        after = keyset_position(table, page[-1])
                    end = len(page) < self.settings.chunk_rows
                    if batch.rows and (end or batch.rows >= self.settings.batch_rows):
                        rows = batch.rows
                        last = batch.land()
                        # Only now, with the rows merged, do the watermark and the position move.
                        self.offline.set_watermark(table.name, last, run_id)
                        progress["after"], progress["done"] = after, end
                        progress["rows"] = int(progress["rows"]) + rows
                        result.rows += rows
                        result.batches += 1
                        result.watermark = last
                        save()
                        elapsed = self._clock() - began
                        log.info("export progress", extra={"fields": {
                            "run_id": run_id, "table": table.name, "rows": result.rows, "done": end,
                            "rows_per_s": round(result.rows / elapsed) if elapsed > 0 else None}})
                        if not end and self._clock() > deadline:
                            return result
                    if end:
                        progress["done"] = result.done = True
                        return result
        finally:
            result.seconds = round(self._clock() - began, 3)

    # --- snapshot -----------------------------------------------------------------------------

    def snapshot(self, run_id: str, day: date | None = None) -> dict[str, Any]:
        """Build the feature snapshot of ``day`` (default: yesterday, UTC), replacing its rows."""
        started = self._clock()
        now = self._now()
        day = day or (now.date() - timedelta(days=1))
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if start > now:
            raise InvalidParameter(f"date {day.isoformat()} has not begun yet (UTC); snapshots describe past days")
        # The end of the day (its last microsecond), or now for today's partial snapshot.
        as_of = min(start + timedelta(days=1) - _ONE_MICROSECOND, now)
        self.ensure_schema()
        fs = self.feature_set()
        snapshots = SnapshotWriter(self.offline)

        def progress(done: int, chunks: int) -> None:
            elapsed = self._clock() - started
            log.info("snapshot progress", extra={"fields": {
                "run_id": run_id, "chunks_done": done, "chunks": chunks,
                "eta_s": round(elapsed / done * (chunks - done), 1)}})

        rows = snapshots.replace_day(fs, day, as_of, run_id, self.settings.feature_chunk, progress)
        seconds = round(self._clock() - started, 3)
        log.info("snapshot built", extra={"fields": {"run_id": run_id, "rows": rows, "seconds": seconds}})
        return {"run_id": run_id, "step": "snapshot", "date": day.isoformat(), "as_of": as_of.isoformat(),
                "feature_set": fs.name, "version": fs.version, "rows": rows, "seconds": seconds}

    # --- run record ---------------------------------------------------------------------------

    def record(self, run_id: str, status: str, steps: Mapping[str, Any] | None = None,
               error: str | None = None) -> dict[str, Any]:
        """Close the run's etl_runs row with its final status and what each step reported."""
        self.ensure_schema()
        record = self.offline.run_record(run_id)
        merged: dict[str, Any] = dict(record["steps"]) if record else {}
        # The export's plan (bounds, positions, refresh request) is the service's own: a report of
        # the export's answer must not replace it, or the next run would not know where this began.
        merged.update({k: v for k, v in (steps or {}).items() if k != "export" or "export" not in merged})
        rows = merged.get("export", {}).get("rows")
        self.offline.save_run(run_id, status, merged, error=None if error is None else error[:4000],
                              rows_loaded=None if rows is None else int(rows), finished=True)
        log.info("run recorded", extra={"fields": {"run_id": run_id, "status": status}})
        return {"run_id": run_id, "step": "record", "status": status}
