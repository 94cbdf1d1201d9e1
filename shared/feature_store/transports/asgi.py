"""The async edge: a function served on an event loop (functions-framework's ASGI mode: uvicorn, Starlette).

The read functions are served here (docs/serving.md, "Async serving"): the route, the query's
checks, the error mapping, the JSON and the log line are transports/http.py's, so an answer is
the threaded edge's byte for byte but for its timing. What differs is the waiting: a cached read
runs on the event loop from end to end (Redis awaited: stores/redis_online_async.py), and whatever
would block it (a miss read from the source and written back, credentials not cached, the
served-version pointer) runs on the instance's serving pool (``offload``), never on the loop.

What the threaded edge leaves to gunicorn and to transports/wsgi.py is done here, in the same shape:
more than 100 headers or one over 8,190 bytes is 431 ``headers_too_large``; a body over
``MAX_BODY_BYTES`` is 413 ``body_too_large`` from its Content-Length before it is read (a chunked one
is read up to the limit, never past it). ``json_asgi()`` makes the rest JSON: Starlette's own
answers (``/robots.txt``, ``/favicon.ico``, a path its router cannot match, a method functions-framework
does not route) and uvicorn's 400 for a request it cannot parse.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, MutableMapping
from concurrent.futures import Executor
from typing import Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from feature_store.errors import BodyTooLarge, FeatureStoreError, InvalidBody
from feature_store.logs import get_logger
from feature_store.transports.http import (
    NO_STORE,
    Endpoint,
    Incoming,
    check_route,
    close_exchange,
    error_body,
    failed,
    open_exchange,
    route_not_found,
)
from feature_store.transports.wsgi import CODES, MAX_BODY_BYTES, SERVER_MESSAGES
from feature_store.wiring import services

T = TypeVar("T")
log = get_logger("feature_store.http")

# gunicorn's defaults, which the threaded functions are served with (limit_request_fields, _field_size).
MAX_HEADERS = 100
MAX_HEADER_BYTES = 8190
HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "2.0", "3"})
DRAIN_BYTES = 16 * MAX_BODY_BYTES  # a refused chunked body is read and dropped up to this, as gunicorn does


class HeadersTooLarge(FeatureStoreError):
    code = "headers_too_large"
    status = 431


async def offload(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args)`` on the instance's serving pool, in this request's context (its request id, its trace)."""
    return await run_on(services().serving_pool, fn, *args, **kwargs)


async def run_on(pool: Executor, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args)`` on ``pool``, in this request's context, awaited."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


def _no_body() -> bytes:
    return b""


async def asgi_edge(request: Request, endpoint: Endpoint) -> Response:
    """Serve ``request`` on the event loop: the endpoint's async handler awaited, else its handler on the pool."""
    scope = request.scope
    headers = request.headers
    query = request.query_params.multi_items() if scope["query_string"] else []
    incoming = Incoming(scope["method"], scope["path"], query, headers, headers.get("content-type"), _no_body)
    exchange = open_exchange(incoming)
    try:
        _check_head(scope)
        if "content-length" in headers or "transfer-encoding" in headers:
            data = await _read_body(request)
            incoming.read_body = lambda: data
        match = check_route(incoming, endpoint)
        if endpoint.async_handler is not None:
            status, body = await endpoint.async_handler(incoming, match, offload)
        else:
            status, body = await offload(endpoint.handler, incoming, match)
    except Exception as exc:
        status, body = failed(exchange, endpoint, exc)
    data = close_exchange(exchange, status, body)
    return Response(data, status, exchange.headers, "application/json")


def _check_head(scope: MutableMapping[str, Any]) -> None:
    """431 past gunicorn's header limits; 400 for an HTTP version that does not exist (h11 takes any d.d)."""
    if scope.get("http_version") not in HTTP_VERSIONS:
        raise InvalidBody(SERVER_MESSAGES[400], code="invalid_request")
    raw = scope["headers"]
    if len(raw) > MAX_HEADERS or any(len(name) + len(value) + 2 > MAX_HEADER_BYTES for name, value in raw):
        raise HeadersTooLarge(SERVER_MESSAGES[431])


async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with 413 past ``limit`` bytes: from its Content-Length before reading, else as it streams."""
    length = request.headers.get("content-length")
    if length:
        if not (length.isascii() and length.isdigit()):
            raise InvalidBody("Content-Length is not a number", code="invalid_request")
        if int(length) > limit:
            raise BodyTooLarge(f"the body has {int(length):,} bytes; the limit is {limit:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            # Read to its end (up to DRAIN_BYTES) and dropped: closing on unread bytes would reset the
            # connection, and the client might never read the 413.
            if size <= DRAIN_BYTES:
                continue
            break
        chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge(f"the body has more bytes; the limit is {limit:,} bytes")
    return b"".join(chunks)


# --- answers the edge never sees, made JSON ------------------------------------------------------------------


def json_asgi() -> None:
    """Make Starlette's and uvicorn's own answers JSON in this process (idempotent)."""
    from starlette.exceptions import HTTPException
    from starlette.middleware.exceptions import ExceptionMiddleware

    if getattr(ExceptionMiddleware.http_exception, "__module__", None) == __name__:
        return

    async def http_exception(self: Any, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        if status == 404:
            error = route_not_found(request.url.path)
            code, message = error.code, error.message
        else:
            code = CODES.get(status, "invalid_request" if status < 500 else "internal")
            message = f"{request.method[:20]!r} is not allowed here" if status == 405 else str(exc.detail)
        return _json(status, code, message, dict(exc.headers or {}))

    ExceptionMiddleware.http_exception = http_exception  # type: ignore[method-assign]
    _json_parse_errors()
    _exit_normally_on_sigterm()


def _exit_normally_on_sigterm() -> None:
    """Let a uvicorn worker that was sent SIGTERM exit normally, so the audit recorder's atexit flush runs.

    gunicorn's UvicornWorker resets SIGTERM to its default action; uvicorn captures it, shuts down
    gracefully, then raises it again with that original handler, which kills the process before any
    atexit hook: answered reads whose audit rows were still queued lost them (about one SIGTERM in three
    under load in tests/audit/test_audit_load.py). With SIGTERM as SystemExit instead, the re-raised
    signal ends the worker like the threaded one ends.
    """
    try:
        from uvicorn_worker import UvicornWorker
    except ImportError:  # served by something else: nothing to change
        return
    import signal

    from feature_store.services.audit import exit_on_sigterm

    init_signals = UvicornWorker.init_signals

    def init_signals_then_exit_normally(self: Any) -> None:
        init_signals(self)
        signal.signal(signal.SIGTERM, exit_on_sigterm)

    UvicornWorker.init_signals = init_signals_then_exit_normally


def _json(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    if log.isEnabledFor(logging.INFO):
        log.info("request", extra={"fields": {"httpRequest": {"status": status}, "error_code": code}})
    return Response(orjson.dumps(error_body(code, message)), status, {**NO_STORE, **(headers or {})},
                    "application/json")


def _parse_error_body(msg: str) -> bytes:
    return orjson.dumps(error_body("invalid_request", f"{SERVER_MESSAGES[400]} ({msg[:120]})"))


def _json_parse_errors() -> None:
    """uvicorn answers a request it cannot parse with a text/plain 400 of its own: the same, as JSON, from
    either of its HTTP parsers (httptools when installed, as it is with this package; else h11)."""
    try:
        from uvicorn.protocols.http import h11_impl
    except ImportError:  # served by something else: nothing to replace
        return
    import h11

    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store"), (b"connection", b"close")]

    def h11_400_response(self: Any, msg: str) -> None:
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=_parse_error_body(msg)), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    h11_impl.H11Protocol.send_400_response = h11_400_response  # type: ignore[method-assign]
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools not installed: uvicorn parses with h11
        return

    def httptools_400_response(self: Any, msg: str) -> None:
        body = _parse_error_body(msg)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    httptools_impl.HttpToolsProtocol.send_400_response = httptools_400_response  # type: ignore[method-assign]
