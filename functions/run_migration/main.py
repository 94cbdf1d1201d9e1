"""Cloud Function run_migration: POST one phase of the move to CockroachDB; see workflows/migration.yaml."""

import flask
import functions_framework

from feature_store.transports.http import http_edge
from feature_store.transports.migration_api import run_phase


@functions_framework.http
def run_migration(request: flask.Request) -> flask.Response:
    return http_edge(request, run_phase, methods=("POST",))
