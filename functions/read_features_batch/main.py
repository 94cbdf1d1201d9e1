"""Cloud Function read_features_batch: POST /api/v1/features/batch -> one vector per user id."""

import flask
import functions_framework

from feature_store.transports.access import refuse_to_start_without_pepper
from feature_store.transports.features_api import READ_BATCH
from feature_store.transports.http import http_edge
from feature_store.transports.wsgi import json_app

refuse_to_start_without_pepper()  # a deployed read function never runs without its key pepper
json_app()  # the framework's own answers (paths it routes itself, oversized bodies, bad HTTP) are JSON too


@functions_framework.http
def read_features_batch(request: flask.Request) -> flask.Response:
    return http_edge(request, READ_BATCH)
