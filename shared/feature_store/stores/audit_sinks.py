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
from feature_store.protowire import field

log = get_logger(__name__)

Row = dict[str, Any]


def row_key(row: Row) -> str:
    """A row's identity in the audit trail: the server's request id and the user's position in the read."""
    return f"{row['request_id']}:{row['position']}"


PUBLISH_METHOD = "/google.pubsub.v1.Publisher/Publish"


def publish_request(topic: str, datas: Sequence[bytes]) -> bytes:
    """A serialized ``google.pubsub.v1.PublishRequest``: ``topic`` (field 1) and one ``PubsubMessage``
    (field 2) per data, each holding only its ``data`` (field 1); the protobuf wire format, written out."""
    parts = [field(b"\x0a", topic.encode())]
    for data in datas:
        parts.append(field(b"\x12", field(b"\x0a", data) if data else b""))  # proto3 leaves an empty field out
    return b"".join(parts)


class PubSubAuditSink:
    """Publishes the rows of one recorder batch as one Publish request of the audit topic.

    The recorder already batches, so this makes one Publish RPC per call on the channel of
    google-cloud-pubsub's generated client (``google.pubsub_v1.PublisherClient``: its credentials,
    endpoint and TLS) and writes the request's protobuf itself (``publish_request``): the generated
    client's own call (proto-plus messages, retry and logging wrappers) cost 16 µs of CPU per row
    measured in the serving process, this about 2. A Publish request is all or nothing: on any error
    every row of the call is kept for a retry (the recorder's, after ``retry_backoff_s``).
    """

    def __init__(self, publisher: Any, topic_path: str, timeout_s: float, max_rows: int = 1000) -> None:
        self.topic_path = topic_path
        self._timeout_s = timeout_s
        self._max_rows = max_rows  # Pub/Sub takes at most 1,000 messages (and 10 MB) per request
        # bytes in, bytes out: no (de)serializer
        self._call = publisher.transport.grpc_channel.unary_unary(PUBLISH_METHOD)
        self._metadata = (("x-goog-request-params", f"topic={topic_path}"),)  # the generated client's routing header

    def publish(self, rows: Sequence[Row]) -> Sequence[Row]:
        for first in range(0, len(rows), self._max_rows):
            chunk = rows[first:first + self._max_rows]
            body = publish_request(self.topic_path, [orjson.dumps(r) for r in chunk])
            try:
                self._call(body, timeout=self._timeout_s, metadata=self._metadata)
            except Exception as exc:  # UNAVAILABLE, DEADLINE_EXCEEDED, ...: keep these and later rows
                log.warning("audit messages not published", extra={"fields": {"audit_unsent": len(rows) - first,
                                                                              "error": type(exc).__name__}})
                return rows[first:]
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
