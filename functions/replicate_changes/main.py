"""Cloud Function replicate_changes: one change-stream message per Pub/Sub push -> the migration's other database."""

import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import BadRequest

from feature_store.transports.migration_events import replicate_changes as replicate
from feature_store.transports.migration_events import replicate_rejected_push

# A raw push body the framework cannot convert (a message with attributes and no data) is ours to apply.
functions_framework.errorhandler(BadRequest)(replicate_rejected_push)


@functions_framework.cloud_event
def replicate_changes(cloud_event: CloudEvent) -> None:
    replicate(cloud_event)
