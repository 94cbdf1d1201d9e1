"""The CloudEvent edge of replicate_changes: one change event per Pub/Sub push (a second subscription).

The same edge as ingest_changes (transports/cloudevents.pubsub_edge): returning acknowledges (applied,
stale, skipped, a tombstone, or poison, which is logged and counted), raising makes Pub/Sub redeliver.
"""

from __future__ import annotations

from typing import Any

from feature_store.migration_wiring import migration_services
from feature_store.transports.cloudevents import pubsub_edge


def replicate_changes(event: Any) -> None:
    """The replicate_changes function: apply one change to the database the migration's direction names."""
    replicator = migration_services().replicator
    pubsub_edge(event, lambda m: replicator.handle(m.data, m.message_id),
                lambda code: replicator.stats.add(f"poison:{code}"))
