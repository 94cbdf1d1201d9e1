"""Cloud Function ingest_changes: one Debezium change event per Pub/Sub push -> Redis (CAS) and BigQuery."""

import functions_framework
from cloudevents.http import CloudEvent

from feature_store.transports.cloudevents import ingest_changes as ingest


@functions_framework.cloud_event
def ingest_changes(cloud_event: CloudEvent) -> None:
    ingest(cloud_event)
