"""Cloud Function ingest_changes: one change-stream message per Pub/Sub push -> Redis (CAS) and BigQuery."""

import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import BadRequest

from feature_store.transports.cloudevents import ingest_changes as ingest
from feature_store.transports.cloudevents import ingest_rejected_push

# A raw push body the framework cannot convert (a message with attributes and no data) is ours to apply.
functions_framework.errorhandler(BadRequest)(ingest_rejected_push)


@functions_framework.cloud_event
def ingest_changes(cloud_event: CloudEvent) -> None:
    ingest(cloud_event)
