"""Cloud Function replicate_changes: one change event per Pub/Sub push -> the migration's other database."""

import functions_framework
from cloudevents.http import CloudEvent

from feature_store.transports.migration_events import replicate_changes as replicate


@functions_framework.cloud_event
def replicate_changes(cloud_event: CloudEvent) -> None:
    replicate(cloud_event)
