"""The floors of the benchmarks: functions that do nothing, served exactly like the real ones."""

import flask
import functions_framework
import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    """The threaded floor: gunicorn's threads, Flask."""
    return flask.Response('{"ok":true}', status=200, mimetype="application/json")


@functions_framework.aio.http
async def noop_async(request: Request) -> Response:
    """The async floor: uvicorn workers, Starlette (how the read functions are served by default)."""
    return Response(b'{"ok":true}', 200, {"Cache-Control": "no-store"}, "application/json")


@functions_framework.cloud_event
def noop_event(cloud_event: object) -> None:
    """The floor of the ingest benchmark: accepts a Pub/Sub push CloudEvent and does nothing."""


@functions_framework.aio.http
async def noop_event_async(request: Request) -> Response:
    """The floor of the ingest benchmark served async (FS_CDC_SERVING_MODE=async): reads the push, does nothing."""
    await request.body()
    return Response(b"OK", 200, media_type="text/plain")
