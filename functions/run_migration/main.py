"""Cloud Function run_migration: POST one phase of the move to CockroachDB; see workflows/migration.yaml."""

import flask
import functions_framework

from feature_store.transports.http import http_edge
from feature_store.transports.migration_api import RUN_PHASE
from feature_store.transports.wsgi import json_app

json_app()  # the framework's own answers (paths it routes itself, oversized bodies, bad HTTP) are JSON too


@functions_framework.http
def run_migration(request: flask.Request) -> flask.Response:
    return http_edge(request, RUN_PHASE)
