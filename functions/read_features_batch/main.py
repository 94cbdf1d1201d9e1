"""Cloud Function read_features_batch: POST /api/v1/features/batch -> one vector per user id.

Served on an event loop (functions-framework's ASGI mode), or threaded (gunicorn) with FS_SERVING_MODE=threaded.
"""

from feature_store.transports.access import refuse_to_start_without_pepper
from feature_store.transports.features_api import READ_BATCH
from feature_store.transports.functions import read_function

refuse_to_start_without_pepper()  # a deployed read function never runs without its key pepper
read_features_batch = read_function("read_features_batch", READ_BATCH)
