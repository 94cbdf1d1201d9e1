"""The one way a function module turns an Endpoint into the function functions-framework serves.

``threaded_function``: a Flask view on gunicorn's threads (transports/http.py, transports/wsgi.py).
``read_function``: the read endpoints, on an event loop by default (``functions_framework.aio``:
functions-framework then serves the module with uvicorn workers; transports/asgi.py), or threaded with
``FS_SERVING_MODE=threaded``. Both answer the same requests with the same JSON.
``ingest_function``: ingest_changes, on an event loop by default (transports/pushed.py), or a CloudEvent
function on gunicorn's threads with ``FS_CDC_SERVING_MODE=threaded`` (transports/cloudevents.py). Both
acknowledge, redeliver and log the same deliveries the same way.

A mode that is neither async nor threaded does not stop the function loading: it is served threaded,
and ``Settings.from_env`` refuses the same variable when the first request builds the services, so every
request is answered 500 ``invalid_settings`` (a push: not acknowledged) instead of the instance crashing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
import functions_framework
from functions_framework import _function_registry

from feature_store.errors import SettingsError
from feature_store.settings import cdc_serving_mode, serving_mode
from feature_store.transports.http import Endpoint, http_edge
from feature_store.transports.wsgi import json_app


def _mode(read: Callable[[], str]) -> str:
    """The serving mode ``read`` gives, or threaded when it is invalid (see above)."""
    try:
        return read()
    except SettingsError:
        return "threaded"


def threaded_function(name: str, endpoint: Endpoint) -> Callable[..., Any]:
    """``name`` served threaded: every answer JSON, the framework's own ones too (json_app)."""
    json_app()
    # A name once registered async stays so in functions-framework's registry: one process serving a
    # function both ways (a test run) must take it back.
    _function_registry.ASGI_FUNCTIONS.discard(name)

    def function(request: flask.Request) -> flask.Response:
        return http_edge(request, endpoint)

    function.__name__ = function.__qualname__ = name  # functions-framework registers a function by its name
    return functions_framework.http(function)


def read_function(name: str, endpoint: Endpoint) -> Callable[..., Any]:
    """``name`` served as FS_SERVING_MODE says: async (the default) or threaded."""
    if _mode(serving_mode) == "threaded":
        return threaded_function(name, endpoint)
    import functions_framework.aio
    from starlette.requests import Request
    from starlette.responses import Response

    from feature_store.transports.asgi import asgi_edge, json_asgi

    json_asgi()

    async def function(request: Request) -> Response:
        return await asgi_edge(request, endpoint)

    function.__name__ = function.__qualname__ = name
    return functions_framework.aio.http(function)


def ingest_function(name: str) -> Callable[..., Any]:
    """``name`` served as FS_CDC_SERVING_MODE says: async (the default) or threaded."""
    if _mode(cdc_serving_mode) == "threaded":
        from cloudevents.http import CloudEvent
        from werkzeug.exceptions import BadRequest

        from feature_store.transports.cloudevents import ingest_changes, ingest_rejected_push

        _function_registry.ASGI_FUNCTIONS.discard(name)
        # A raw push body the framework cannot convert (a message with attributes and no data) is ours to apply.
        functions_framework.errorhandler(BadRequest)(ingest_rejected_push)

        def threaded(cloud_event: CloudEvent) -> None:
            ingest_changes(cloud_event)

        threaded.__name__ = threaded.__qualname__ = name
        return functions_framework.cloud_event(threaded)
    from functions_framework import aio
    from starlette.requests import Request
    from starlette.responses import Response

    from feature_store.transports.pushed import ingest_pushed

    async def function(request: Request) -> Response:
        return await ingest_pushed(request)

    function.__name__ = function.__qualname__ = name
    return aio.http(function)
