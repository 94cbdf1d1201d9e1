"""The offline changelog on BigQuery: every source row change streamed into ``changelog_<table>``.

One ``insertAll`` per table per call, each row with ``insertId`` = ``Change.insert_id`` (a hash
of table, LSN and primary key), so BigQuery drops redelivered rows on a best-effort basis; the
``changelog_<table>_dedup`` views (sql/bigquery/changelog.sql) make readers exact whatever got
through. A failed or partly rejected insert raises DependencyUnavailable: the message is
redelivered and the retry lands the same rows under the same ids.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from feature_store.domain.changes import OP_NAMES, Change
from feature_store.errors import DependencyUnavailable
from feature_store.stores.dialect import WATERMARK_HEX_DIGITS, Dialect, format_watermark
from feature_store.stores.sql_files import sql_root

# Errors of the client stack that mean "BigQuery could not be reached or refused for now".
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError)


def _client_errors() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions as api_exceptions
    from requests import exceptions as http_exceptions

    return (api_exceptions.GoogleAPIError, http_exceptions.RequestException, *_TRANSPORT_ERRORS)


def changelog_row(change: Change, message_id: str, dialect: Dialect, ingested_at: float) -> dict[str, Any]:
    """The JSON row streamed for one change (column names of sql/bigquery/changelog.sql)."""
    row: dict[str, Any] = {
        "change_op": OP_NAMES[change.op],
        "source_watermark": format_watermark(dialect, change.lsn),
        "lsn": f"{change.lsn:0{WATERMARK_HEX_DIGITS}x}",  # text order is position order, 96 bits fit
        "tx_id": change.tx_id,
        "changed_at": _iso(datetime.fromtimestamp(change.ts_ms / 1000, UTC)),
        "ingested_at": _iso(datetime.fromtimestamp(ingested_at, UTC)),
        "message_id": message_id,
        "row_key": change.row_key,
    }
    for name, value in change.row.items():
        row[name] = _json_value(value)
    return row


def _iso(t: datetime) -> str:
    return t.isoformat()


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


class BigQueryChangelog:
    """Streams changes into ``<project>.<dataset>.changelog_<table>``."""

    def __init__(self, client: Any, dataset: str, dialect: Dialect, timeout_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        from google.cloud.bigquery import DEFAULT_RETRY

        self.client = client
        self.dataset = dataset
        self.dialect = dialect
        self.timeout_s = timeout_s
        self._clock = clock
        # The emulator answers a rejected row with HTTP 500, which the default retry repeats for
        # 600 s; a short deadline turns that into a redelivery instead of a stuck instance.
        self._retry = DEFAULT_RETRY.with_timeout(timeout_s)
        self._errors = _client_errors()

    def table_id(self, table: str) -> str:
        return f"{self.client.project}.{self.dataset}.changelog_{table}"

    def append(self, items: Sequence[tuple[Change, str]]) -> int:
        """Stream ``(change, message_id)`` pairs; return the number of rows sent."""
        now = self._clock()
        by_table: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
        for change, message_id in items:
            rows, ids = by_table.setdefault(change.table, ([], []))
            rows.append(changelog_row(change, message_id, self.dialect, now))
            ids.append(change.insert_id)
        for table, (rows, ids) in by_table.items():
            try:
                errors = self.client.insert_rows_json(self.table_id(table), rows, row_ids=ids,
                                                      retry=self._retry, timeout=self.timeout_s)
            except self._errors as exc:
                raise DependencyUnavailable("bigquery", f"changelog_{table}: {type(exc).__name__}") from exc
            if errors:
                first = errors[0].get("errors", [{}])[0] if isinstance(errors[0], dict) else {}
                raise DependencyUnavailable(
                    "bigquery", f"changelog_{table} rejected {len(errors)} of {len(rows)} rows "
                                f"({first.get('reason', 'unknown')}: {str(first.get('message', ''))[:120]})")
        return sum(len(rows) for rows, _ in by_table.values())

    def create_tables(self) -> None:
        """Create the dataset, the changelog tables and their dedup views when missing (idempotent)."""
        for statement in changelog_ddl(self.dataset):
            try:
                self.client.query(statement, timeout=self.timeout_s).result(timeout=self.timeout_s)
            except self._errors as exc:
                raise DependencyUnavailable("bigquery", f"changelog DDL: {type(exc).__name__}: {exc}") from exc


def changelog_ddl(dataset: str) -> list[str]:
    """The statements of sql/bigquery/changelog.sql rendered for ``dataset``."""
    text = (sql_root() / "bigquery" / "changelog.sql").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", text.format(dataset=dataset), flags=re.M) if s.strip()]
