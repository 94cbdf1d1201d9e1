"""Cloud Function refresh_cache: POST {"mode": ...} -> bulk refresh of the online store (transports/refresh_api.py)."""

import flask
import functions_framework

from feature_store.transports.http import http_edge
from feature_store.transports.refresh_api import REFRESH
from feature_store.transports.wsgi import json_app

json_app()  # the framework's own answers (paths it routes itself, oversized bodies, bad HTTP) are JSON too


@functions_framework.http
def refresh_cache(request: flask.Request) -> flask.Response:
    return http_edge(request, REFRESH)
