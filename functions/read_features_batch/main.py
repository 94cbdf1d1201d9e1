"""Cloud Function read_features_batch: POST /api/v1/features/batch -> one vector per user id.

Served threaded (gunicorn), or on an event loop with FS_SERVING_MODE=async (functions-framework's ASGI mode).
"""

from feature_store.transports.access import refuse_to_start_without_pepper
from feature_store.transports.features_api import READ_BATCH
from feature_store.transports.functions import read_function

refuse_to_start_without_pepper()  # a deployed read function never runs without its key pepper
read_features_batch = read_function("read_features_batch", READ_BATCH)
