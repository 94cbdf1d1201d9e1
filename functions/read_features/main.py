"""Cloud Function read_features: GET /api/v1/features/user/{user_id} -> the credit_decision vector."""

import flask
import functions_framework

from feature_store.transports.features_api import read_one
from feature_store.transports.http import http_edge


@functions_framework.http
def read_features(request: flask.Request) -> flask.Response:
    return http_edge(request, read_one, methods=("GET",))
