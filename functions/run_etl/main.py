"""Cloud Function run_etl: POST one step of the offline ETL (export, snapshot, record); see workflows/etl.yaml."""

import flask
import functions_framework

from feature_store.transports.etl_api import RUN_STEP
from feature_store.transports.http import http_edge
from feature_store.transports.wsgi import json_app

json_app()  # the framework's own answers (paths it routes itself, oversized bodies, bad HTTP) are JSON too


@functions_framework.http
def run_etl(request: flask.Request) -> flask.Response:
    return http_edge(request, RUN_STEP)
