"""Cloud Function ingest_changes: one change-stream message per Pub/Sub push -> Redis (CAS) and BigQuery.

A CloudEvent function on gunicorn's threads, or on an event loop with FS_CDC_SERVING_MODE=async
(transports/pushed.py: functions-framework's ASGI mode cannot read the raw push body itself).
"""

from feature_store.transports.functions import ingest_function

ingest_changes = ingest_function("ingest_changes")
