"""The one way a function module turns an Endpoint into the function functions-framework serves.

``threaded_function``: a Flask view on gunicorn's threads (transports/http.py, transports/wsgi.py).
``read_function``: the read endpoints, on an event loop by default (``functions_framework.aio``:
functions-framework then serves the module with uvicorn workers; transports/asgi.py), or threaded with
``FS_SERVING_MODE=threaded``. Both answer the same requests with the same JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
import functions_framework
from functions_framework import _function_registry

from feature_store.settings import serving_mode
from feature_store.transports.http import Endpoint, http_edge
from feature_store.transports.wsgi import json_app


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
    if serving_mode() == "threaded":
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
