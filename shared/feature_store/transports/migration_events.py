"""The CloudEvent edge of replicate_changes: one change-stream message per Pub/Sub push (a second subscription).

The same edge as ingest_changes (transports/cloudevents.pubsub_edge): returning acknowledges (applied,
stale, skipped, a tombstone, heartbeat, transaction boundary or resolved timestamp, or poison, which is
logged and counted); raising makes Pub/Sub redeliver. A raw push with attributes and no data, which
functions-framework answers 400 before the function runs, is applied by ``replicate_rejected_push``.
"""

from __future__ import annotations

from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from feature_store.migration_wiring import migration_services
from feature_store.transports.cloudevents import event_id, pubsub_edge


def _replicate(body: Any, event_id: str | None) -> None:
    replicator = migration_services().replicator
    pubsub_edge(body, event_id, lambda m: replicator.handle(m.data, m.message_id, m.attributes, m.published_ms),
                lambda code: replicator.stats.add(f"poison:{code}"))


def replicate_changes(event: Any) -> None:
    """The replicate_changes function: apply one change to the database the migration's direction names."""
    _replicate(getattr(event, "data", None), event_id(event))


def replicate_rejected_push(error: HTTPException) -> tuple[str, int]:
    """functions-framework's handler of the 400 it gives a raw push it cannot convert (see cloudevents.py)."""
    error.description = "a raw push body functions-framework could not convert"
    _replicate(flask.request.get_data(), None)
    return "OK", 200
