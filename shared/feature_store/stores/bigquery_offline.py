"""The offline store on BigQuery: schema, statements, file loads, watermarks and run records.

One instance wraps one google-cloud-bigquery client and one dataset. Every failure leaves as a
FeatureStoreError: 5xx, 429 and network failures as ``DependencyUnavailable("bigquery")`` (retry
later), a statement or load BigQuery rejects as ``OfflineQueryFailed`` (retrying cannot help).
The schema is every file of sql/bigquery/ applied in name order (``ensure_schema``), so files
written by other parts of the project (changelog.sql) are applied the same way.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from feature_store.errors import DependencyUnavailable, OfflineQueryFailed
from feature_store.logs import get_logger
from feature_store.stores.sql_files import sql_root

log = get_logger(__name__)


# Statements of a DDL file end with a semicolon at the end of a line (sql/bigquery/changelog.sql).
_STATEMENT_END = re.compile(r";[ \t]*(?:\r?\n|$)")
_TRANSIENT_REASONS = {"rateLimitExceeded", "jobRateLimitExceeded", "backendError", "internalError"}
_TRANSIENT = (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.BadGateway,
              gexc.GatewayTimeout, gexc.DeadlineExceeded, gexc.RetryError, requests.exceptions.ConnectionError,
              requests.exceptions.Timeout, ConnectionError, TimeoutError, concurrent.futures.TimeoutError)


def ddl_files(directory: Path | None = None) -> list[Path]:
    """The schema files of sql/bigquery/, in the order they are applied (name order)."""
    return sorted((directory or sql_root() / "bigquery").glob("*.sql"))


def ddl_statements(text: str, dataset: str) -> list[str]:
    """The statements of one DDL file, with ``{dataset}`` rendered; comment-only pieces dropped."""
    rendered = text.format(dataset=dataset)
    pieces = (p.strip() for p in _STATEMENT_END.split(rendered))
    return [p for p in pieces if re.sub(r"--[^\n]*", "", p).strip()]


def _parameter(name: str, value: Any) -> Any:
    if isinstance(value, list):
        kind = "STRING" if not value or isinstance(value[0], str) else "INT64"
        return bigquery.ArrayQueryParameter(name, kind, value)
    kinds = ((bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (datetime, "TIMESTAMP"), (date, "DATE"),
             (str, "STRING"))
    kind = next((k for t, k in kinds if isinstance(value, t)), "STRING")
    return bigquery.ScalarQueryParameter(name, kind, value)


class OfflineStore:
    """Statements and loads against one dataset; each method is one or a few BigQuery jobs."""

    def __init__(self, client: Any, dataset: str, location: str | None = None, api_timeout_s: float = 30.0,
                 job_timeout_s: float = 3600.0) -> None:
        self.client = client
        self.dataset = dataset
        self.location = location
        self.api_timeout_s = api_timeout_s
        self.job_timeout_s = job_timeout_s
        # The client's own retries would keep a failing call going for 600 s, and re-insert a query
        # for 10 minutes more: bound the first, drop the second, so an outage soon becomes a 503
        # that the workflow retries on its own schedule.
        self._retry = bigquery.DEFAULT_RETRY.with_deadline(api_timeout_s)

    def table(self, name: str) -> str:
        """The quoted name of a table of the dataset, for SQL text."""
        return f"`{self.dataset}.{name}`"

    # --- schema -------------------------------------------------------------------------------

    def ensure_schema(self, directory: Path | None = None) -> int:
        """Create the dataset if needed and apply every DDL file (idempotent); return statements run."""
        with _mapped("create the dataset"):
            dataset = bigquery.Dataset(f"{self.client.project}.{self.dataset}")
            if self.location:
                dataset.location = self.location
            self.client.create_dataset(dataset, exists_ok=True, retry=self._retry, timeout=self.api_timeout_s)
        count = 0
        for path in ddl_files(directory):
            for statement in ddl_statements(path.read_text(), self.dataset):
                self.run(statement)
                count += 1
        log.info("offline schema applied", extra={"fields": {"statements": count, "dataset": self.dataset}})
        return count

    def columns(self, table: str) -> dict[str, str] | None:
        """Column name -> type of a table (of the dataset, or ``dataset.table``), or None when there is none."""
        qualified = table if "." in table else f"{self.dataset}.{table}"
        try:
            with _mapped(f"read the schema of {table}"):
                found = self.client.get_table(f"{self.client.project}.{qualified}",
                                              retry=self._retry, timeout=self.api_timeout_s)
        except OfflineQueryFailed as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                return None
            raise
        return {f.name: f.field_type for f in found.schema}

    def drop_table(self, table: str) -> None:
        with _mapped(f"drop {table}"):
            self.client.delete_table(f"{self.client.project}.{self.dataset}.{table}", not_found_ok=True,
                                     retry=self._retry, timeout=self.api_timeout_s)

    # --- statements and loads -----------------------------------------------------------------

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement or script (``@name`` parameters only outside scripts); return its rows."""
        config = bigquery.QueryJobConfig(query_parameters=[_parameter(k, v) for k, v in (params or {}).items()])
        with _mapped("run a statement"):
            # The emulator runs a query inside the insert call: let that call last as long as a job may.
            job = self.client.query(sql, job_config=config, location=self.location, retry=self._retry,
                                    timeout=self.job_timeout_s, job_retry=None)
            rows = job.result(retry=self._retry, timeout=self.job_timeout_s, job_retry=None)
            return [dict(row.items()) for row in rows]

    def load_csv(self, path: Path, table: str, schema: Sequence[tuple[str, str]], truncate: bool = True) -> int:
        """Load a CSV file with a header row into a table of the dataset; return the rows loaded.

        Empty fields load as NULL (BigQuery's CSV rule); the file's columns follow ``schema``.
        """
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.CSV,
            schema=[bigquery.SchemaField(name, kind) for name, kind in schema],
            skip_leading_rows=1,
            allow_quoted_newlines=True,
            write_disposition="WRITE_TRUNCATE" if truncate else "WRITE_APPEND",
        )
        with _mapped(f"load {path.name} into {table}"), open(path, "rb") as data:
            job = self.client.load_table_from_file(
                data, f"{self.client.project}.{self.dataset}.{table}", job_config=config, location=self.location,
                timeout=self.api_timeout_s)
            job.result(timeout=self.job_timeout_s)
            return int(job.output_rows or 0)

    # --- ETL bookkeeping ----------------------------------------------------------------------

    def watermarks(self) -> dict[str, str]:
        """Table -> watermark of every mirrored table exported at least once."""
        rows = self.run(f"SELECT source_table, watermark FROM {self.table('etl_watermarks')}")
        return {r["source_table"]: r["watermark"] for r in rows}

    def set_watermark(self, table: str, watermark: str, run_id: str) -> None:
        """Move a table's watermark forward (never back: watermarks are fixed-width ISO text)."""
        self.run(f"""
            MERGE {self.table('etl_watermarks')} AS w
            USING (SELECT @source_table AS source_table) AS s ON w.source_table = s.source_table
            WHEN MATCHED AND w.watermark < @watermark THEN UPDATE SET watermark = @watermark,
                                         updated_at = CURRENT_TIMESTAMP(),
                                         etl_run_id = @run_id
            WHEN NOT MATCHED THEN INSERT (source_table, watermark, updated_at, etl_run_id)
                                  VALUES (@source_table, @watermark, CURRENT_TIMESTAMP(), @run_id)""",
                 {"source_table": table, "watermark": watermark, "run_id": run_id})

    def run_record(self, run_id: str) -> dict[str, Any] | None:
        """The etl_runs row of a run (steps parsed), or None."""
        rows = self.run(f"SELECT * FROM {self.table('etl_runs')} WHERE run_id = @run_id", {"run_id": run_id})
        if not rows:
            return None
        row = rows[0]
        row["steps"] = json.loads(row["steps"]) if row.get("steps") else {}
        return row

    def last_run(self, status: str) -> dict[str, Any] | None:
        """The most recently started run with this status (steps parsed), or None."""
        rows = self.run(f"SELECT * FROM {self.table('etl_runs')} WHERE status = @status "
                        "ORDER BY started_at DESC LIMIT 1", {"status": status})
        if not rows:
            return None
        rows[0]["steps"] = json.loads(rows[0]["steps"]) if rows[0].get("steps") else {}
        return rows[0]

    def save_run(self, run_id: str, status: str, steps: Mapping[str, Any], error: str | None = None,
                 rows_loaded: int | None = None, finished: bool = False) -> None:
        """Create or update the etl_runs row of a run (started_at is kept from its first save)."""
        self.run(f"""
            MERGE {self.table('etl_runs')} AS r
            USING (SELECT @run_id AS run_id) AS s ON r.run_id = s.run_id
            WHEN MATCHED THEN UPDATE SET status = @status, steps = @steps, error = @error,
                rows_loaded = CAST(@rows_loaded AS INT64), finished_at = IF(@finished, CURRENT_TIMESTAMP(), NULL)
            WHEN NOT MATCHED THEN INSERT (run_id, kind, status, started_at, finished_at, rows_loaded, error, steps)
                VALUES (@run_id, 'etl', @status, CURRENT_TIMESTAMP(), IF(@finished, CURRENT_TIMESTAMP(), NULL),
                        CAST(@rows_loaded AS INT64), @error, @steps)""",
                 {"run_id": run_id, "status": status, "steps": json.dumps(steps, sort_keys=True, default=str),
                  "error": error, "rows_loaded": rows_loaded, "finished": finished})


@contextmanager
def _mapped(action: str) -> Iterator[None]:
    """Turn the client's exceptions into the package's: transient ones retry, the rest give up."""
    try:
        yield
    except _TRANSIENT as exc:
        raise DependencyUnavailable("bigquery", f"could not {action}: {type(exc).__name__}") from exc
    except gexc.GoogleAPICallError as exc:
        reasons = {str(e.get("reason")) for e in getattr(exc, "errors", None) or [] if isinstance(e, dict)}
        if reasons & _TRANSIENT_REASONS:  # BigQuery says 403 for rate limits
            raise DependencyUnavailable("bigquery", f"could not {action}: {', '.join(sorted(reasons))}") from exc
        message = getattr(exc, "message", None) or str(exc)
        raise OfflineQueryFailed(f"BigQuery refused to {action}: {message[:600]}") from exc
