"""The HTTP edge: method check, error mapping, JSON out, one access log line per request.

Errors are mapped to status codes here and only here: a FeatureStoreError becomes its own
status with ``{"error": {"code", "message"}}``; anything else becomes a 500 with a generic
sentence (the traceback goes to the log, never to the caller).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

import flask
import orjson
from pydantic import BaseModel, ValidationError

from feature_store.errors import FeatureStoreError, InvalidBody, MethodNotAllowed, TransientError
from feature_store.logs import get_logger, set_trace

log = get_logger("feature_store.http")

Handler = Callable[[flask.Request], tuple[int, dict[str, Any]]]
Model = TypeVar("Model", bound=BaseModel)


def http_edge(request: flask.Request, handler: Handler, methods: Collection[str] = ("GET",)) -> flask.Response:
    """Run ``handler`` and turn its outcome, or its error, into a JSON response."""
    started = time.perf_counter()
    set_trace(request.headers.get("X-Cloud-Trace-Context"))
    headers: dict[str, str] = {}
    try:
        if request.method not in methods:
            headers["Allow"] = ", ".join(methods)
            raise MethodNotAllowed(f"{request.method} is not allowed here; use {' or '.join(methods)}")
        status, body = handler(request)
    except FeatureStoreError as exc:
        status, body = exc.status, {"error": exc.to_dict()}
        if isinstance(exc, TransientError):
            headers["Retry-After"] = str(exc.retry_after_s)
            body["error"]["retry_after_s"] = exc.retry_after_s
    except Exception:
        log.exception("unhandled error")
        status, body = 500, {"error": {"code": "internal",
                                       "message": "the server failed to answer; the error is logged"}}
    elapsed_ms = (time.perf_counter() - started) * 1000
    body["response_time_ms"] = round(elapsed_ms, 3)
    log.info("request", extra={"fields": {
        "httpRequest": {"requestMethod": request.method, "requestUrl": request.path, "status": status,
                        "latency": f"{elapsed_ms / 1000:.6f}s"},
        **({"error_code": body["error"]["code"]} if "error" in body else {}),
        **({"cache_hit": body["cache_hit"]} if "cache_hit" in body else {}),
    }})
    return flask.Response(orjson.dumps(body), status=status,
                          mimetype="application/json", headers=headers)


def json_body(request: flask.Request) -> Any:
    """The parsed JSON body, or InvalidBody when it is missing or not JSON."""
    # get_data, not .data: a form content type would leave .data empty.
    data = request.get_data(cache=True)
    if not data:
        raise InvalidBody("the request has no body; send a JSON object")
    try:
        return orjson.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidBody("the body is not valid JSON") from None


def parse_body(request: flask.Request, model: type[Model], what: str) -> Model:
    """The JSON object body validated by ``model``; InvalidBody naming the first bad field otherwise."""
    raw = json_body(request)
    if not isinstance(raw, dict):
        raise InvalidBody(f"the body must be a JSON object with {what}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidBody(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
