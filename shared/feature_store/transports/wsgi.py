"""The function's app as functions-framework serves it, made to answer JSON before and around the edge.

functions-framework builds one Flask app per function (``create_app``), routes every path to the
function except ``/robots.txt`` and ``/favicon.ico``, and serves it with gunicorn. Three kinds of
answer never reach transports/http.py and were HTML pages:

- the app's own: a path its router cannot match (a newline in the path), ``/robots.txt``,
  ``/favicon.ico``, or a crash outside the function: JSON error handlers on the app;
- a body over ``MAX_BODY_BYTES``: refused by a WSGI wrapper with 413 ``body_too_large`` from its
  ``Content-Length`` (a chunked body is read up to the limit, never past it), before Flask reads it;
- gunicorn's: a request it cannot parse (a control character in the request line, a header over
  8,190 bytes or more than 100 of them, a bad chunk) is answered before any app runs, by
  ``gunicorn.util.write_error``. functions-framework starts gunicorn with fixed options and no hook,
  so that writer is replaced, in the function's own process, by one writing the same JSON shape.

In production Cloud Functions' front end answers some of these first (docs/serving.md).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import flask
import orjson
from werkzeug.exceptions import HTTPException, InternalServerError

from feature_store.logs import get_logger
from feature_store.transports.http import error_body, json_response, route_not_found

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = get_logger("feature_store.http")

# A batch of 1,000 ids of 64 characters is ~70 KB; a refresh or ETL body is smaller still.
MAX_BODY_BYTES = 1024 * 1024
CODES = {400: "invalid_request", 404: "route_not_found", 405: "method_not_allowed", 408: "request_timeout",
          413: "body_too_large", 414: "uri_too_long", 415: "unsupported_media_type", 417: "expectation_failed",
          431: "headers_too_large", 501: "not_implemented"}
SERVER_MESSAGES = {
    400: "the request is not valid HTTP/1.1",
    403: "the request is forbidden",
    414: "the request line is too long",
    417: "the Expect header cannot be met",
    431: "the request headers are too large (at most 100 headers of at most 8,190 bytes each)",
    501: "the Transfer-Encoding is not supported",
}


def json_app(app: flask.Flask | None = None) -> None:
    """Make every answer of ``app`` JSON (default: the app functions-framework is loading this module into)."""
    if app is None:
        if not flask.has_app_context():
            return
        app = cast(flask.Flask, flask.current_app._get_current_object())  # type: ignore[attr-defined]
    app.register_error_handler(HTTPException, _framework_error)
    # Replaces functions-framework's crash_handler (the exception's text as text/html), keeping its header.
    app.register_error_handler(InternalServerError, _crash)
    app.wsgi_app = BodyLimit(app.wsgi_app)  # type: ignore[method-assign]
    _json_server_errors()


def _framework_error(exc: HTTPException) -> flask.Response:
    status = exc.code or 500
    if status == 404:
        error = route_not_found(flask.request.path)
        return json_response(404, error_body(error.code, error.message))
    message = exc.description or exc.name
    return json_response(status, error_body(CODES.get(status, "invalid_request" if status < 500 else "internal"),
                                            message))


def _crash(exc: InternalServerError) -> flask.Response:
    return json_response(500, error_body("internal", "the server failed to answer; the error is logged"),
                         {"X-Google-Status": "crash"})


class BodyLimit:
    """A WSGI wrapper refusing bodies over ``limit`` bytes with 413 ``body_too_large`` before they are read."""

    def __init__(self, app: WSGIApplication, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = environ.get("CONTENT_LENGTH") or ""
        if length:
            if not (length.isascii() and length.isdigit()):
                return self._refuse(environ, start_response, 400, "invalid_request", "Content-Length is not a number")
            if int(length) > self.limit:
                return self._too_large(environ, start_response, f"{int(length):,} bytes")
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            data = environ["wsgi.input"].read(self.limit + 1)
            if len(data) > self.limit:
                return self._too_large(environ, start_response, "more bytes")
            environ["wsgi.input"] = io.BytesIO(data)
            environ["CONTENT_LENGTH"] = str(len(data))
        return self.app(environ, start_response)

    def _too_large(self, environ: WSGIEnvironment, start_response: StartResponse, size: str) -> Iterable[bytes]:
        return self._refuse(environ, start_response, 413, "body_too_large",
                            f"the body has {size}; the limit is {self.limit:,} bytes")

    @staticmethod
    def _refuse(environ: WSGIEnvironment, start_response: StartResponse, status: int, code: str,
                message: str) -> Iterable[bytes]:
        # The unread body is left to the server, which discards it in small reads (gunicorn does).
        if log.isEnabledFor(logging.INFO):
            log.info("request", extra={"fields": {
                "httpRequest": {"requestMethod": environ.get("REQUEST_METHOD"),
                                "requestUrl": str(environ.get("PATH_INFO", ""))[:200], "status": status},
                "error_code": code}})
        return json_response(status, error_body(code, message))(environ, start_response)


def _json_server_errors() -> None:
    """Replace gunicorn's HTML error page (``gunicorn.util.write_error``) by the JSON error shape."""
    try:
        from gunicorn import util
    except ImportError:  # served by something else: nothing to replace
        return
    if getattr(util.write_error, "__module__", None) == __name__:
        return

    def write_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
        code = CODES.get(status_int, "invalid_request" if status_int < 500 else "internal")
        sentence = SERVER_MESSAGES.get(status_int, "the server could not answer the request")
        detail = f" ({mesg[:120]})" if mesg and status_int < 500 and status_int != 431 else ""
        body = orjson.dumps(error_body(code, sentence + detail))
        head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\n\r\n")
        util.write_nonblock(sock, head.encode("latin-1") + body)

    util.write_error = write_error
