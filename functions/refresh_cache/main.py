"""Cloud Function refresh_cache: POST {"mode": ...} -> bulk refresh of the online store (transports/refresh_api.py)."""

import flask
import functions_framework

from feature_store.transports.http import http_edge
from feature_store.transports.refresh_api import refresh


@functions_framework.http
def refresh_cache(request: flask.Request) -> flask.Response:
    return http_edge(request, refresh, methods=("POST",))
