"""The floors of the benchmarks: functions that do nothing, served exactly like the real ones."""

import flask
import functions_framework


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    return flask.Response('{"ok":true}', status=200, mimetype="application/json")


@functions_framework.cloud_event
def noop_event(cloud_event: object) -> None:
    """The floor of the ingest benchmark: accepts a Pub/Sub push CloudEvent and does nothing."""
