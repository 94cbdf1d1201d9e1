"""Cloud Function run_etl: POST one step of the offline ETL (export, snapshot, record); see workflows/etl.yaml."""

import flask
import functions_framework

from feature_store.transports.etl_api import run_step
from feature_store.transports.http import http_edge


@functions_framework.http
def run_etl(request: flask.Request) -> flask.Response:
    return http_edge(request, run_step, methods=("POST",))
