"""Cloud Function ingest_changes: one change-stream message per Pub/Sub push -> Redis (CAS) and BigQuery.

Served on an event loop (transports/pushed.py: functions-framework's ASGI mode cannot read the raw push body
itself), or as a CloudEvent function on gunicorn's threads with FS_CDC_SERVING_MODE=threaded.
"""

from feature_store.transports.functions import ingest_function

ingest_changes = ingest_function("ingest_changes")
