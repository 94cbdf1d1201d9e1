"""Cloud Function read_receipt: GET /api/v1/receipts/{request_id} -> the read's audit record, each vector recomputed."""

import flask
import functions_framework

from feature_store.transports.http import http_edge
from feature_store.transports.receipts_api import READ_RECEIPT
from feature_store.transports.wsgi import json_app

json_app()  # the framework's own answers (paths it routes itself, oversized bodies, bad HTTP) are JSON too


@functions_framework.http
def read_receipt(request: flask.Request) -> flask.Response:
    return http_edge(request, READ_RECEIPT)
