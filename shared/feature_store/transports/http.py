"""The HTTP edge: route, method and query check, error mapping, JSON out, one access log line per request.

Errors are mapped to status codes here and only here: a FeatureStoreError becomes its own
status with ``{"error": {"code", "message"}}`` (SettingsError: 500 ``invalid_settings``, logged at
ERROR by transports/misconfiguration.py); anything else becomes a 500 with a generic sentence (the
traceback goes to the log, never to the caller). Every answer is JSON and carries
``Cache-Control: no-store`` (a vector is true at one instant; an error must not be cached either).
What the framework answers before the edge runs (unknown paths it routes itself, bodies over the
size limit, HTTP it cannot parse) is made JSON by transports/wsgi.py in the same shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import flask
import orjson

from feature_store.errors import (
    FeatureStoreError,
    InvalidBody,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    SettingsError,
    Unauthenticated,
    UnsupportedMediaType,
)
from feature_store.logs import get_logger, set_trace
from feature_store.transports import misconfiguration
from feature_store.transports.access import Headers
from feature_store.transports.read_audit import begin
from feature_store.transports.requests import shown

log = get_logger("feature_store.http")

Handler = Callable[["Incoming", re.Match[str]], tuple[int, dict[str, Any]]]
NO_STORE = {"Cache-Control": "no-store"}
WWW_AUTHENTICATE = 'Bearer realm="feature-store", ApiKey header="X-API-Key"'  # a 401's challenge


@dataclass(slots=True)
class Incoming:
    """A request as the edge and the handlers see it, whichever server brought it (gunicorn's WSGI through
    Flask, or uvicorn's ASGI through Starlette: transports/asgi.py)."""

    method: str
    path: str  # percent-decoded
    query: list[tuple[str, str]]  # every (name, value) as sent, repeats kept
    headers: Headers  # case-insensitive (Flask's and Starlette's both are)
    content_type: str | None
    read_body: Callable[[], bytes]  # the body, within the size limit (both edges enforce it before)

    @property
    def mimetype(self) -> str:
        """The content type without parameters, lowercased (Flask's ``mimetype``)."""
        return (self.content_type or "").split(";", 1)[0].strip().lower()

    def query_dict(self) -> dict[str, str]:
        return dict(self.query)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What one function answers: the path it serves (a full match), its methods and query parameters.

    A GET endpoint answers HEAD as GET without the body. Any other path is 404 ``route_not_found``,
    another method 405 ``method_not_allowed`` with ``Allow``, an undeclared query parameter 400
    ``unknown_parameter`` and a parameter given twice 400 ``repeated_parameter``. ``handler`` answers on
    a thread; an async edge awaits ``async_handler`` when there is one, else runs ``handler`` on its pool.
    """

    path: re.Pattern[str]
    methods: tuple[str, ...]
    handler: Handler
    params: frozenset[str] = field(default_factory=frozenset)
    async_handler: Callable[..., Awaitable[tuple[int, dict[str, Any]]]] | None = None

    @property
    def allowed(self) -> tuple[str, ...]:
        return (*self.methods, "HEAD") if "GET" in self.methods else self.methods


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> flask.Response:
    """A JSON answer that no cache keeps."""
    return flask.Response(orjson.dumps(body), status=status, mimetype="application/json",
                          headers={**NO_STORE, **(headers or {})})


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def route_not_found(path: str) -> NotFound:
    return NotFound(f"no route {shown(path)} here; see docs/openapi.yaml", code="route_not_found")


def check_route(request: Incoming, endpoint: Endpoint) -> re.Match[str]:
    """The path's match: 404, 405 and the query's 400s as the Endpoint describes them."""
    match = endpoint.path.fullmatch(request.path)
    if match is None:
        raise route_not_found(request.path)
    if request.method not in endpoint.allowed:
        raise MethodNotAllowed(f"{shown(request.method)} is not allowed here; use {' or '.join(endpoint.methods)}")
    seen: dict[str, int] = {}
    for name, _ in request.query:
        seen[name] = seen.get(name, 0) + 1
    for name, count in seen.items():
        if name not in endpoint.params:
            takes = f"takes {', '.join(sorted(endpoint.params))}" if endpoint.params else "takes no query parameters"
            raise InvalidParameter(f"unknown query parameter {shown(name)}; this endpoint {takes}",
                                   code="unknown_parameter")
        if count > 1:
            raise InvalidParameter(f"query parameter {name} is given {count} times; give it once",
                                   code="repeated_parameter")
    return match


@dataclass(slots=True)
class Exchange:
    """One request at the edge: its arrival, its request id, the headers its answer will carry."""

    request: Incoming
    started: float
    request_id: str
    headers: dict[str, str]


def open_exchange(request: Incoming) -> Exchange:
    """Start serving ``request``: its clock, its trace and its request id (transports/read_audit.py: ``begin``)."""
    started = time.perf_counter()
    set_trace(request.headers.get("X-Cloud-Trace-Context"))
    ids = begin("rest", request.headers.get)
    return Exchange(request, started, ids.request_id, {"X-Request-Id": ids.request_id})


def failed(exchange: Exchange, endpoint: Endpoint, exc: Exception) -> tuple[int, dict[str, Any]]:
    """The answer to a handler's error: a FeatureStoreError's own status and body, anything else a 500."""
    if not isinstance(exc, FeatureStoreError):
        log.error("unhandled error", exc_info=exc)
        return 500, error_body("internal", "the server failed to answer; the error is logged")
    if isinstance(exc, SettingsError):  # the server's fault: 500 invalid_settings, logged once at ERROR
        return misconfiguration.answer(exc, request_id=exchange.request_id)
    body = {"error": exc.to_dict()}
    if isinstance(exc, MethodNotAllowed):
        exchange.headers["Allow"] = ", ".join(endpoint.allowed)
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:  # TransientError (503) and RateLimited (429)
        exchange.headers["Retry-After"] = str(retry_after)
        body["error"]["retry_after_s"] = retry_after
    if isinstance(exc, Unauthenticated):
        exchange.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return exc.status, body


def close_exchange(exchange: Exchange, status: int, body: dict[str, Any]) -> bytes:
    """The answer's JSON (with its request id and time) and its one access log line."""
    request = exchange.request
    elapsed_ms = (time.perf_counter() - exchange.started) * 1000
    body["request_id"] = exchange.request_id
    body["response_time_ms"] = round(elapsed_ms, 3)
    log.info("request", extra={"fields": {
        "request_id": exchange.request_id,
        "httpRequest": {"requestMethod": request.method, "requestUrl": logged_path(request.path), "status": status,
                        "latency": f"{elapsed_ms / 1000:.6f}s"},
        **({"error_code": body["error"]["code"]} if "error" in body else {}),
        **({"cache_hit": body["cache_hit"]} if "cache_hit" in body else {}),
    }})
    exchange.headers.update(NO_STORE)
    return orjson.dumps(body)


def incoming(request: flask.Request) -> Incoming:
    """A Flask request as the edge sees it."""
    return Incoming(request.method, request.path, list(request.args.items(multi=True)), request.headers,
                    request.content_type, lambda: request.get_data(cache=True))


def http_edge(request: flask.Request, endpoint: Endpoint) -> flask.Response:
    """Run the endpoint's handler and turn its outcome, or its error, into a JSON response (threaded servers)."""
    exchange = open_exchange(incoming(request))
    try:
        status, body = endpoint.handler(exchange.request, check_route(exchange.request, endpoint))
    except Exception as exc:
        status, body = failed(exchange, endpoint, exc)
    data = close_exchange(exchange, status, body)
    return flask.Response(data, status=status, mimetype="application/json", headers=exchange.headers)


_USER_SEGMENT = re.compile(r"(/user/)[^/]*")


def logged_path(path: str) -> str:
    """A path as logs may show it: no user id (the request id ties a log line to its audit record)."""
    return _USER_SEGMENT.sub(r"\1{user_id}", path[:200])


def body_bytes(request: Incoming) -> bytes:
    """The raw body: 415 unless it is declared ``application/json``, 400 when it is empty."""
    if request.mimetype != "application/json":
        given = f"Content-Type {shown(request.content_type)}" if request.content_type else "no Content-Type"
        raise UnsupportedMediaType(f"the body must be JSON sent as Content-Type: application/json; got {given}")
    # The size limit was enforced before the body was read (transports/wsgi.py, transports/asgi.py).
    data = request.read_body()
    if not data:
        raise InvalidBody("the request has no body; send a JSON object")
    return data


def json_body(request: Incoming) -> Any:
    """The parsed JSON body, or 415/400 as ``body_bytes`` and InvalidBody when it is not JSON."""
    try:
        return orjson.loads(body_bytes(request))
    except orjson.JSONDecodeError:
        raise InvalidBody("the body is not valid JSON") from None
