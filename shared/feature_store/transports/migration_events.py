"""The CloudEvent edge of replicate_changes: one change-stream message per Pub/Sub push (a second subscription).

The same edge as ingest_changes (transports/cloudevents.pubsub_edge): returning acknowledges (applied,
stale, skipped, a tombstone, heartbeat, transaction boundary or resolved timestamp, or poison, which is
logged and counted); raising makes Pub/Sub redeliver, as does the 500 ``invalid_settings`` answered when the
settings are missing or invalid (no migration target, say). A raw push with attributes and no data, which
functions-framework answers 400 before the function runs, is applied by ``replicate_rejected_push``.
"""

from __future__ import annotations

from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from feature_store.migration_wiring import migration_services
from feature_store.transports.cloudevents import cloud_event_edge, pubsub_edge, rejected_push_edge


def _replicate(body: Any, event_id: str | None) -> None:
    replicator = migration_services().replicator
    pubsub_edge(body, event_id, lambda m: replicator.handle(m.data, m.message_id, m.attributes, m.published_ms),
                lambda code: replicator.stats.add(f"poison:{code}"))


def replicate_changes(event: Any) -> None:
    """The replicate_changes function: apply one change to the database the migration's direction names."""
    cloud_event_edge(_replicate, event)


def replicate_rejected_push(error: HTTPException) -> flask.Response | tuple[str, int]:
    """functions-framework's handler of the 400 it gives a raw push it cannot convert (see cloudevents.py)."""
    return rejected_push_edge(_replicate, error)
