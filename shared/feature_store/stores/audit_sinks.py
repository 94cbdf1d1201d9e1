"""Audit sinks: where the recorder's rows go (services/audit.py). Each returns the rows it could not send.

- ``PubSubAuditSink``: production. One message per ``audit_reads`` row, its data the row as JSON, one
  Publish request per recorder batch;
  a Pub/Sub BigQuery subscription with ``use_table_schema`` writes each message as one row of the
  table (terraform/modules/pubsub), so no code of ours stands between the topic and the table.
- ``BigQueryAuditSink``: the local stack and tests. The same rows streamed into the same table
  (``insert_rows_json``): the stand-in for that subscription, since no Pub/Sub emulator runs here.
  Each row's ``insertId`` is ``request_id:position``, so a retried row is de-duplicated best-effort.

A sink returns the very row objects it could not send (the recorder keeps exactly those).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from feature_store.logs import get_logger
from feature_store.stores.pubsub_topic import MAX_MESSAGES, TopicPublisher

log = get_logger(__name__)

Row = dict[str, Any]


def row_key(row: Row) -> str:
    """A row's identity in the audit trail: the server's request id and the user's position in the read."""
    return f"{row['request_id']}:{row['position']}"


class PubSubAuditSink:
    """Publishes the rows of one recorder batch as Publish requests of the audit topic (stores/pubsub_topic.py).

    A request is all or nothing: on an error its rows and every later one are kept for a retry (the
    recorder's, after ``retry_backoff_s``).
    """

    def __init__(self, publisher: Any, topic_path: str, timeout_s: float, max_rows: int = MAX_MESSAGES) -> None:
        self.topic_path = topic_path
        self._topic = TopicPublisher(publisher, topic_path, timeout_s, max_rows)

    def publish(self, rows: Sequence[Row]) -> Sequence[Row]:
        datas = [orjson.dumps(r) for r in rows]
        for start, end in self._topic.chunks(datas):
            try:
                self._topic.send(datas[start:end])
            except Exception as exc:  # UNAVAILABLE, DEADLINE_EXCEEDED, ...: keep these and later rows
                log.warning("audit messages not published", extra={"fields": {"audit_unsent": len(rows) - start,
                                                                              "error": type(exc).__name__}})
                return rows[start:]
        return []


class BigQueryAuditSink:
    """Streams rows into ``dataset.table`` with ``insert_rows_json``."""

    def __init__(self, client: Any, table: str, timeout_s: float) -> None:
        self._client = client
        self.table = table  # project.dataset.table
        self._timeout_s = timeout_s

    def publish(self, rows: Sequence[Row]) -> Sequence[Row]:
        try:
            errors = self._client.insert_rows_json(self.table, list(rows), row_ids=[row_key(r) for r in rows],
                                                   timeout=self._timeout_s)
        except Exception as exc:
            log.warning("audit rows not inserted", extra={"fields": {"error": type(exc).__name__}})
            return rows
        failed = sorted({int(e["index"]) for e in errors or ()})
        if failed:
            log.warning("audit rows refused by BigQuery", extra={"fields": {"audit_unsent": len(failed)}})
        return [rows[i] for i in failed]
