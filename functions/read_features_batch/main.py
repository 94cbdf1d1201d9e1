"""Cloud Function read_features_batch: POST /api/v1/features/batch -> one vector per user id."""

import flask
import functions_framework

from feature_store.transports.features_api import read_batch
from feature_store.transports.http import http_edge


@functions_framework.http
def read_features_batch(request: flask.Request) -> flask.Response:
    return http_edge(request, read_batch, methods=("POST",))
