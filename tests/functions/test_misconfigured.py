"""Every function, served by functions-framework as production serves it, with settings missing or invalid.

An HTTP function answers 500 ``invalid_settings`` in the error envelope, naming the variables; a Pub/Sub
push function answers the same and so leaves the message unacknowledged (Pub/Sub redelivers it: nothing
is lost). Either way the instance logs one JSON line at ERROR naming the variables, with no traceback and
no variable's value: every value a test sets to SENTINEL must appear nowhere, in the answer or the log.
A deployed read function without its key pepper refuses to start, with one CRITICAL line and no traceback.
No test here reaches a database or Redis: the settings refuse first.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from producers import MESSAGE_PUBLISHED, TOPIC, push_body

from conftest import AUTH_HEADERS, base_env
from served import Served

SENTINEL = "s3cr3t-sentinel-value"
Answer = tuple[int, dict[str, str], bytes]


def settings_env(**changes: str | None) -> dict[str, str]:
    """A complete local environment (no database is ever reached) with ``changes``: None unsets a variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FS_") and k != "K_SERVICE"}
    env |= base_env("cfgerr_never_connected") | {"WORKERS": "1", "THREADS": "2",
                                                  "FS_POSTGRES_PASSWORD": SENTINEL, "FS_LOG_LEVEL": "INFO"}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(name, **changes)``: the function served over ``settings_env(**changes)``, stopped after the test."""
    started: list[Served] = []

    def start(name: str, **changes: str | None) -> Served:
        served = Served(name, settings_env(**changes), tmp_path / f"{name}-{len(started)}.log")
        started.append(served)
        served.wait()
        return served

    yield start
    for served in started:
        served.stop()


def call(served: Served, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={**AUTH_HEADERS, **(headers or {})})
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def post_json(served: Served, body: Any, path: str = "/") -> Answer:
    return call(served, "POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})


def log_lines(served: Served) -> tuple[str, list[dict[str, Any]]]:
    """The instance's whole output and its JSON lines."""
    text = served.log.read_text(errors="replace")
    return text, [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def assert_refused(served: Served, answers: list[Answer], variables: set[str]) -> None:
    """Each answer 500 ``invalid_settings`` naming ``variables``; one clean ERROR line per answer; no value shown."""
    for status, headers, body in answers:
        assert status == 500, (status, body[:300])
        assert headers.get("content-type", "").startswith("application/json"), (headers, body[:300])
        error = json.loads(body)["error"]
        assert error["code"] == "invalid_settings"
        assert all(name in error["message"] for name in variables), error["message"]
        assert SENTINEL.encode() not in body
    text, lines = log_lines(served)
    assert "Traceback" not in text, text[-3000:]
    assert SENTINEL not in text
    errors = [line for line in lines if line["severity"] in ("ERROR", "CRITICAL")]
    assert len(errors) == len(answers), text[-3000:]
    for line in errors:
        assert line["error_code"] == "invalid_settings" and variables <= set(line["variables"]), line
        assert "exception" not in line


# --- HTTP functions ---------------------------------------------------------------------------------------------


def test_read_features_without_a_pepper_is_500_invalid_settings(serve: Callable[..., Served]) -> None:
    served = serve("read_features", FS_AUTH_KEY_PEPPER=None)

    answer = call(served, "GET", "/api/v1/features/user/u1")

    assert_refused(served, [answer], {"FS_AUTH_KEY_PEPPER"})


@pytest.mark.parametrize("mode", ["async", "threaded"])
def test_read_features_batch_with_a_bad_integer_is_500_invalid_settings(serve: Callable[..., Served],
                                                                        mode: str) -> None:
    served = serve("read_features_batch", FS_SERVING_MODE=mode, FS_SERVING_BATCH_MAX=SENTINEL)

    answer = post_json(served, {"user_ids": ["u1"]}, "/api/v1/features/batch")

    assert_refused(served, [answer], {"FS_SERVING_BATCH_MAX"})


@pytest.mark.parametrize("name", ["read_features", "read_features_batch"])
def test_a_read_function_with_an_unknown_serving_mode_answers_500_invalid_settings(
        serve: Callable[..., Served], name: str) -> None:
    served = serve(name, FS_SERVING_MODE=SENTINEL)

    if name == "read_features":
        answer = call(served, "GET", "/api/v1/features/user/u1")
    else:
        answer = post_json(served, {"user_ids": ["u1"]}, "/api/v1/features/batch")

    assert_refused(served, [answer], {"FS_SERVING_MODE"})


def test_read_receipt_without_a_postgres_host_is_500_invalid_settings(serve: Callable[..., Served]) -> None:
    from feature_store.domain.audit import new_request_id

    served = serve("read_receipt", FS_POSTGRES_HOST=None)

    answer = call(served, "GET", f"/api/v1/receipts/{new_request_id(int(time.time() * 1000), os.urandom(10))}")

    assert_refused(served, [answer], {"FS_POSTGRES_HOST", "FS_POSTGRES_INSTANCE_CONNECTION_NAME"})


def test_refresh_cache_with_a_redis_url_that_is_not_one_is_500_invalid_settings(
        serve: Callable[..., Served]) -> None:
    served = serve("refresh_cache", FS_REDIS_URL=f"http://user:{SENTINEL}@127.0.0.1:6379/0")

    answer = post_json(served, {"mode": "stats"})

    assert_refused(served, [answer], {"FS_REDIS_URL"})


def test_refresh_cache_without_redis_is_500_invalid_settings(serve: Callable[..., Served]) -> None:
    served = serve("refresh_cache", FS_REDIS_URL=None)

    answer = post_json(served, {"mode": "stats"})

    assert_refused(served, [answer], {"FS_REDIS_URL"})


def test_run_etl_with_a_bad_integer_is_500_invalid_settings(serve: Callable[..., Served]) -> None:
    served = serve("run_etl", FS_ETL_CHUNK_ROWS=SENTINEL)

    answer = post_json(served, {"step": "export"})

    assert_refused(served, [answer], {"FS_ETL_CHUNK_ROWS"})


def test_run_migration_without_redis_is_500_invalid_settings(serve: Callable[..., Served]) -> None:
    served = serve("run_migration", FS_REDIS_URL=None, FS_MIGRATION_TARGET_HOST="127.0.0.1",
                   FS_MIGRATION_TARGET_PASSWORD=SENTINEL)

    answer = post_json(served, {"phase": "status"})

    assert_refused(served, [answer], {"FS_REDIS_URL"})


def test_a_deployed_read_function_without_a_pepper_refuses_to_start_cleanly(tmp_path: Path) -> None:
    served = Served("read_features", settings_env(FS_AUTH_KEY_PEPPER=None, K_SERVICE="read_features"),
                    tmp_path / "deployed.log")
    try:
        code = served.proc.wait(60)
    finally:
        served.stop()

    text, lines = log_lines(served)
    assert code == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    [line] = [line for line in lines if line["severity"] in ("ERROR", "CRITICAL")]
    assert line["severity"] == "CRITICAL" and line["error_code"] == "invalid_settings"
    assert "FS_AUTH_KEY_PEPPER" in line["variables"] and "exception" not in line


# --- Pub/Sub push functions: not acknowledged, so redelivered ---------------------------------------------------


def deliveries(served: Served) -> list[Answer]:
    """One message pushed as the raw push body, as a binary-mode CloudEvent, and with attributes and no data
    (which functions-framework's threaded server refuses before the function runs)."""
    raw = post_json(served, push_body(b'{"payload": {}}', "m-raw"))
    binary = call(served, "POST", "/", json.dumps(push_body(b'{"payload": {}}', "m-binary")).encode(), {
        "Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "m-binary", "ce-source": TOPIC,
        "ce-type": MESSAGE_PUBLISHED})
    no_data = post_json(served, push_body(None, "m-attributes", {"key": "k1"}))
    return [raw, binary, no_data]


@pytest.mark.parametrize("mode", ["async", "threaded"])
def test_ingest_changes_without_redis_leaves_every_message_unacknowledged(serve: Callable[..., Served],
                                                                          mode: str) -> None:
    served = serve("ingest_changes", FS_CDC_SERVING_MODE=mode, FS_REDIS_URL=None)

    answers = deliveries(served)

    assert [status for status, _, _ in answers] == [500, 500, 500]
    assert_refused(served, answers, {"FS_REDIS_URL"})


def test_ingest_changes_with_an_unknown_serving_mode_leaves_the_message_unacknowledged(
        serve: Callable[..., Served]) -> None:
    served = serve("ingest_changes", FS_CDC_SERVING_MODE=SENTINEL)

    answers = deliveries(served)

    assert_refused(served, answers, {"FS_CDC_SERVING_MODE"})


def test_replicate_changes_without_a_target_leaves_every_message_unacknowledged(
        serve: Callable[..., Served]) -> None:
    served = serve("replicate_changes", FS_MIGRATION_TARGET_HOST=None, FS_MIGRATION_TARGET_PASSWORD=SENTINEL)

    answers = deliveries(served)

    assert [status for status, _, _ in answers] == [500, 500, 500]
    assert_refused(served, answers, {"FS_MIGRATION_TARGET_HOST"})
