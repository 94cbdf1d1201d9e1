"""A test client for the functions served on an event loop, with the API of Flask's test client.

functions-framework's ``create_app`` returns a Starlette app for a function registered with
``functions_framework.aio`` (the read functions with FS_SERVING_MODE=async). The tests
drive every function through the same calls (``client.get(path, headers=...)``, ``.post(json=...)``,
``response.get_json()``, ``client.environ_base``), so this client speaks ASGI to the app with that API.
One event loop, in a thread of its own, serves every such client of the session: the app's Redis
connections belong to it, as they belong to a uvicorn worker's loop.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
from typing import Any
from urllib.parse import unquote, urlencode

from werkzeug.datastructures import Headers

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _session_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="asgi-test-loop", daemon=True).start()
        return _loop


class AsgiResponse:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers])
        self.data = body

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def text(self) -> str:
        return self.data.decode()

    def get_data(self, as_text: bool = False) -> Any:
        return self.text if as_text else self.data

    def get_json(self) -> Any:
        return jsonlib.loads(self.data)

    @property
    def json(self) -> Any:
        return self.get_json()


class AsgiClient:
    """``get``/``post``/... of Flask's test client over an ASGI app; ``environ_base``'s HTTP_* become headers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.environ_base: dict[str, str] = {}

    def open(self, path: str, method: str = "GET", headers: dict[str, str] | None = None, data: Any = None,
             json: Any = None, content_type: str | None = None, query_string: str | None = None) -> AsgiResponse:
        raw_path, _, query = path.partition("?")
        if isinstance(query_string, dict):
            query_string = urlencode(query_string)
        query = query_string or query
        sent = Headers({k[5:].replace("_", "-").title(): v for k, v in self.environ_base.items()
                        if k.startswith("HTTP_")})
        for name, value in (headers or {}).items():
            sent.set(name, value)
        body = b""
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        elif data is not None:
            body = data.encode() if isinstance(data, str) else bytes(data)
        if content_type is not None:
            sent.set("Content-Type", content_type)
        if body or method in ("POST", "PUT", "PATCH"):
            sent.set("Content-Length", str(len(body)))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": unquote(raw_path), "raw_path": raw_path.encode(), "root_path": "",
                 "query_string": query.encode(), "server": ("localhost", 80), "client": ("127.0.0.1", 50000),
                 "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()]}
        future = asyncio.run_coroutine_threadsafe(self._call(scope, body), _session_loop())
        return future.result(timeout=120)

    async def _call(self, scope: dict[str, Any], body: bytes) -> AsgiResponse:
        received = False
        started: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal received
            if received:
                await asyncio.sleep(3600)  # the client never disconnects mid-request
            received = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        data = b"" if scope["method"] == "HEAD" else b"".join(chunks)  # as a server sends a HEAD's answer
        return AsgiResponse(started["status"], list(started.get("headers", [])), data)

    get = head = post = put = patch = delete = options = None  # set below, one per method


def _verb(method: str) -> Any:
    def call(self: AsgiClient, path: str, **kwargs: Any) -> AsgiResponse:
        return self.open(path, method, **kwargs)

    call.__name__ = method.lower()
    return call


for _method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
    setattr(AsgiClient, _method.lower(), _verb(_method))
