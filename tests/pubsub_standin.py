"""A local stand-in for Pub/Sub's publisher service: google.pubsub.v1.Publisher/Publish over plaintext gRPC.

No Pub/Sub emulator runs here, so the production sink (stores/audit_sinks.PubSubAuditSink, through
google-cloud-pubsub's own PublisherClient) is pointed at this server, which decodes each request with
the library's own PublishRequest message (its raw protobuf: the stand-in's CPU is not ours in
production, so it spends as little of this machine's as it can) and keeps every message it accepted,
or with ``keep=False`` (the serving benchmark) only counts them. ``fail`` makes it answer
UNAVAILABLE until cleared, as Pub/Sub does during an outage.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.pubsub_v1.types import PublishRequest, PublishResponse


class PubSubStandIn:
    """Serves Publish on 127.0.0.1:``port`` (0: any free port); ``messages`` holds (topic, data, attributes)."""

    def __init__(self, port: int = 0, keep: bool = True) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []
        self.keep = keep
        self.received = 0  # messages accepted, kept or not
        self.requests = 0
        self.fail = False
        self._delivered = 0  # messages written by as_bigquery_subscription so far
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.unary_unary_rpc_method_handler(
            self._publish, request_deserializer=PublishRequest.pb().FromString,
            response_serializer=PublishResponse.pb().SerializeToString)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", {"Publish": handler}),))
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self.address = f"127.0.0.1:{self.port}"

    def _publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self.requests += 1
            if self.fail:
                context.abort(grpc.StatusCode.UNAVAILABLE, "the stand-in is down")
            first, count = self.received, len(request.messages)
            self.received += count
            if self.keep:
                for m in request.messages:
                    self.messages.append((request.topic, bytes(m.data), dict(m.attributes)))
            return PublishResponse.pb()(message_ids=[str(first + i) for i in range(count)])

    def as_bigquery_subscription(self, client: Any, table_of: Callable[[str, dict[str, str]], str | None]) -> int:
        """Write the messages kept since the last call as a BigQuery subscription with ``use_table_schema``
        would: each message's data (a JSON object) as one row of ``table_of(topic, attributes)`` (None: no
        subscription takes it), no insertId (a subscription delivers at least once). Returns rows written.

        No Pub/Sub emulator runs here; the BigQuery emulator's streaming insert is the nearest thing to the
        Storage Write API the subscription uses (callers check the rows against the table's schema).
        """
        with self._lock:
            taken, self._delivered = self.messages[self._delivered:], len(self.messages)
        by_table: dict[str, list[dict[str, Any]]] = {}
        for topic, data, attributes in taken:
            table = table_of(topic, attributes)
            if table is not None:
                by_table.setdefault(table, []).append(json.loads(data))
        for table, rows in by_table.items():
            errors = client.insert_rows_json(table, rows, row_ids=[None] * len(rows))
            assert not errors, f"{table} refused rows a subscription would write: {errors[:2]}"
        return sum(len(rows) for rows in by_table.values())

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(data) for _, data, _ in self.messages]

    def start(self) -> PubSubStandIn:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0)
