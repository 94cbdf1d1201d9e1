"""The HTTP contract's edges, probed by hand: each finding of issue 13's "The API contract is exact".

What the server decides before the function runs (HTTP it cannot parse, oversized headers and
bodies) is probed on the functions served by functions-framework as production serves them, on an
event loop (uvicorn, the default) and threaded (gunicorn, FS_SERVING_MODE=threaded), over raw sockets
where a client library would refuse to send the request; the rest through the framework's own app.
Every answer is checked against docs/openapi.yaml's Error schema.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from werkzeug.datastructures import Headers

from conftest import AUTH_HEADERS, ROOT, function_client
from feature_store.domain.synthetic import user_id
from served import Served

OPENAPI = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
ERROR = Draft202012Validator({"$ref": "#/components/schemas/Error", "components": OPENAPI["components"]})


def error_of(status: int, headers: Any, body: bytes) -> tuple[int, str, str]:
    """(status, code, message) of a JSON error answer, after checking it against the document."""
    import orjson

    assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, body[:300])
    assert headers.get("Cache-Control") == "no-store"
    document = orjson.loads(body)
    problems = [e.message for e in ERROR.iter_errors(document)]
    assert not problems, problems
    return status, document["error"]["code"], document["error"]["message"]


@pytest.fixture(scope="module", params=["async", "threaded"])
def served(request: pytest.FixtureRequest, databases: Any,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """The read functions served by uvicorn (async, the default) and by gunicorn (FS_SERVING_MODE=threaded)."""
    import os

    from conftest import base_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_")} | base_env(databases.create()) | {
        "WORKERS": "1", "THREADS": "2", "FS_SERVING_MODE": request.param}
    logs: Path = tmp_path_factory.mktemp("contract")
    functions = {name: Served(name, env, logs / f"{name}.log") for name in ("read_features", "read_features_batch")}
    try:
        for function in functions.values():
            function.wait()
        yield functions
    finally:
        for function in functions.values():
            function.stop()


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; read the answer to the end (the server closes after an error it writes itself)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = Headers([tuple(line.split(": ", 1)) for line in lines[1:]])  # case-insensitive, as HTTP's names are
    return int(lines[0].split()[1]), headers, body


def call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={**AUTH_HEADERS, **(headers or {})})
        answer = conn.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        conn.close()


# --- answered before the function runs (gunicorn, the framework's router, the body limit) ----------------------


def test_an_oversized_header_is_json_431(served: dict[str, Served]) -> None:
    port = served["read_features"].port
    big = raw(port, b"GET /api/v1/features/user/u1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    many = raw(port, b"GET /api/v1/features/user/u1 HTTP/1.1\r\nHost: x\r\n"
               + b"".join(b"X-H%d: 1\r\n" % i for i in range(120)) + b"\r\n")
    assert error_of(*big)[:2] == (431, "headers_too_large")
    assert error_of(*many)[:2] == (431, "headers_too_large")


@pytest.mark.parametrize("line", [b"GET /api/v1/features/user/a\x01b HTTP/1.1", b"GET /a b c HTTP/1.1",
                                  b"G\x00T / HTTP/1.1", b"GET / HTTP/9.9"])
def test_a_request_line_that_is_not_http_is_json_400(served: dict[str, Served], line: bytes) -> None:
    status, code, message = error_of(*raw(served["read_features"].port, line + b"\r\nHost: x\r\n\r\n"))
    assert (status, code) == (400, "invalid_request") and len(message) < 250


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_both_of_uvicorns_parsers_answer_what_they_cannot_parse_with_json_400(parser: str) -> None:
    """The served functions parse with httptools (installed with the package); uvicorn falls back to h11
    without it: json_asgi() makes both parsers' own 400 JSON."""
    import threading
    import time

    import uvicorn

    from feature_store.transports.asgi import json_asgi

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never reached: the parser refuses first
        raise AssertionError(scope)

    json_asgi()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=parser, lifespan="off",
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        for line in (b"G\x00T / HTTP/1.1", b"GET /a b c HTTP/1.1"):  # (HTTP/9.9 passes h11: the edge refuses it)
            status, code, message = error_of(*raw(port, line + b"\r\nHost: x\r\n\r\n"))
            assert (status, code) == (400, "invalid_request") and len(message) < 250
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("path", ["/api/v1/features/user/ab%0Acd", "/robots.txt", "/favicon.ico",
                                  "/api/v1/features/user/a/b", "/" + "x" * 5000])
def test_paths_the_framework_or_the_edge_does_not_route_are_json_404(served: dict[str, Served], path: str) -> None:
    status, code, message = error_of(*call(served["read_features"].port, "GET", path))
    assert (status, code) == (404, "route_not_found") and len(message) < 200


def test_a_body_over_the_limit_is_413_before_it_is_read(served: dict[str, Served]) -> None:
    """A 20 MB batch body once grew a worker from 51 to 228 MB before the 1,000-id limit was checked."""
    length = 20_800_015
    with socket.create_connection(("127.0.0.1", served["read_features_batch"].port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/features/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % length + b'{"user_ids": ["u1"' + b',"u1"' * 10_000)
        # The answer comes while 20 MB of the body are still unsent: the server did not wait to read it.
        received = b""
        while b"\r\n\r\n" not in received or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status, code, message = error_of(int(lines[0].split()[1]), Headers([tuple(x.split(": ", 1)) for x in lines[1:]]),
                                     body)
    assert (status, code) == (413, "body_too_large") and "1,048,576" in message


def test_a_chunked_body_over_the_limit_is_413_too(served: dict[str, Served]) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    status, code, _ = error_of(*raw(served["read_features_batch"].port,
                                    b"POST /api/v1/features/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body))
    assert (status, code) == (413, "body_too_large")


def test_a_small_chunked_body_is_read_as_usual(served: dict[str, Served]) -> None:
    body = b'{"user_ids": []}'
    status, code, message = error_of(*raw(served["read_features_batch"].port,
                                          b"POST /api/v1/features/batch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                          b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)))
    assert (status, code) == (400, "invalid_body") and message.startswith("user_ids")


def test_head_answers_the_get_headers_without_a_body(served: dict[str, Served]) -> None:
    status, headers, body = call(served["read_features"].port, "HEAD", "/api/v1/features/user/u999999999")
    assert (status, body) == (404, b"")
    assert headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"


# --- answered by the edge ---------------------------------------------------------------------------------------


@pytest.fixture
def app(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Callable[[str], Any]:
    use_env(env)
    return function_client


def answer(response: Any) -> tuple[int, str, str]:
    return error_of(response.status_code, response.headers, response.get_data())


@pytest.mark.parametrize("version", ["\u00b2", "\u0661", "1.0", "+1", " 1", "0", "1000000", "9" * 5000, ""])
def test_a_version_is_ascii_digits_from_1_to_999999(app: Callable[[str], Any], version: str) -> None:
    status, code, message = answer(app("read_features").get(f"/api/v1/features/user/{user_id(1)}",
                                                              query_string={"version": version}))
    assert (status, code) == (400, "invalid_parameter") and len(message) < 200


def test_repeated_and_unknown_query_parameters_are_refused(app: Callable[[str], Any]) -> None:
    reader = app("read_features")
    path = f"/api/v1/features/user/{user_id(1)}"
    assert answer(reader.get(path + "?version=1&version=2"))[:2] == (400, "repeated_parameter")
    assert answer(reader.get(path + "?feature=age"))[:2] == (400, "unknown_parameter")
    status, code, message = answer(reader.get(path + "?" + "z" * 10_000 + "=1"))
    assert (status, code) == (400, "unknown_parameter") and len(message) < 200
    batch = app("read_features_batch").post("/api/v1/features/batch?version=1", json={"user_ids": ["u1"]})
    assert answer(batch)[:2] == (400, "unknown_parameter")


@pytest.mark.parametrize(("body", "code"), [
    ({"user_ids": ["u1"], "features": None}, "invalid_body"),
    ({"user_ids": ["u1"], "version": None}, "invalid_body"),
    ({"user_ids": ["u1"], "feature_set": None}, "invalid_body"),
    ({"user_ids": ["u1"], "features": [""]}, "invalid_body"),
    ({"user_ids": ["u1"], "version": "2"}, "invalid_body"),
    ({"user_ids": ["u1"], "version": True}, "invalid_body"),
    ({"user_ids": ["u1"], "features": ["age"] * 65}, "invalid_body"),
])
def test_a_batch_body_is_exactly_the_documented_one(app: Callable[[str], Any], body: dict[str, Any],
                                                     code: str) -> None:
    assert answer(app("read_features_batch").post("/api/v1/features/batch", json=body))[:2] == (400, code)


def test_an_integral_number_is_an_integer_as_json_schema_says(app: Callable[[str], Any]) -> None:
    response = app("read_features_batch").post("/api/v1/features/batch", json={"user_ids": [user_id(3)],
                                                                                "version": 2.0})
    assert response.status_code == 200 and response.get_json()["version"] == 2


@pytest.mark.parametrize(("body", "code"), [
    ({"step": "export", "full": "yes"}, "invalid_body"),
    ({"step": "export", "full": 1}, "invalid_body"),
    ({"step": "snapshot", "run_id": "r1", "date": 20261201}, "invalid_body"),
    ({"step": "export", "date": "2026-12-01"}, "invalid_body"),
    ({"step": "record", "run_id": "r1", "status": None}, "invalid_body"),
    ({"step": "z" * 10_000}, "invalid_body"),
    ({}, "invalid_body"),
])
def test_run_etl_bodies_are_strict(app: Callable[[str], Any], body: dict[str, Any], code: str) -> None:
    status, got, message = answer(app("run_etl").post("/", json=body))
    assert (status, got) == (400, code) and len(message) < 250


@pytest.mark.parametrize(("body", "code"), [
    ({"mode": "full", "shards": "4"}, "invalid_body"),
    ({"mode": "switch", "force": "true", "version": 2}, "invalid_body"),
    ({"mode": "switch", "version": None}, "invalid_body"),
    ({"mode": "incremental", "since": "x" * 65}, "invalid_body"),
    ({"mode": "m" * 10_000}, "unknown_mode"),
    ({"mode": "full", "z" * 10_000: 1}, "invalid_body"),
])
def test_refresh_bodies_are_strict_and_echo_little(app: Callable[[str], Any], body: dict[str, Any],
                                                   code: str) -> None:
    status, got, message = answer(app("refresh_cache").post("/", json=body))
    assert (status, got) == (400, code) and len(message) < 250


@pytest.mark.parametrize("name", ["read_features_batch", "refresh_cache", "run_etl"])
def test_post_functions_want_json_and_serve_only_their_paths(app: Callable[[str], Any], name: str) -> None:
    client = app(name)
    path = {"read_features_batch": "/api/v1/features/batch", "refresh_cache": "/", "run_etl": "/"}[name]
    assert answer(client.post(path, data=b'{"user_ids": ["u1"]}'))[:2] == (415, "unsupported_media_type")
    assert answer(client.post(path, data=b"{}", content_type="text/plain"))[:2] == (415, "unsupported_media_type")
    for other in ("/api/v1/features/batches", "/api/v1/features/batch/x", "/anything", "/api/v1/features/user/u1"):
        if other != path:
            assert answer(client.post(other, json={}))[:2] == (404, "route_not_found"), other
    assert answer(client.put(path, json={}))[:2] == (405, "method_not_allowed")


def test_functions_answer_at_their_cloudfunctions_path_too(app: Callable[[str], Any]) -> None:
    stats = app("refresh_cache").post("/refresh_cache", json={"mode": "stats"})
    assert stats.status_code == 200 and stats.headers["Cache-Control"] == "no-store"
    assert answer(app("run_etl").post("/run_etl", json={"step": "nope"}))[:2] == (400, "invalid_body")


def test_feature_answers_are_never_cached(app: Callable[[str], Any]) -> None:
    single = app("read_features").get(f"/api/v1/features/user/{user_id(2)}")
    batch = app("read_features_batch").post("/api/v1/features/batch", json={"user_ids": [user_id(2)]})
    assert (single.status_code, batch.status_code) == (200, 200)
    assert single.headers["Cache-Control"] == batch.headers["Cache-Control"] == "no-store"
