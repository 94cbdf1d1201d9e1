"""refresh_cache through functions-framework's own app, on the seeded database and a per-test Redis prefix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from conftest import SEED_USERS, function_client
from feature_store.domain.synthetic import user_id


@pytest.fixture
def client(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Any:
    use_env({**env, "FS_REFRESH_CHUNK_USERS": "1000", "FS_REFRESH_USERS_MAX": "5"})
    return function_client("refresh_cache")


def error(response: Any) -> tuple[int, str]:
    body = response.get_json()
    assert set(body["error"]) >= {"code", "message"} and body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return response.status_code, body["error"]["code"]


@pytest.mark.parametrize(("body", "expected"), [
    ({"mode": "warm_everything"}, (400, "unknown_mode")),
    ({"mode": None}, (400, "invalid_body")),
    ({"user_ids": ["u1"]}, (400, "invalid_body")),
    ({"mode": "users", "user_ids": "u000000001"}, (400, "invalid_body")),
    ({"mode": "users", "user_ids": ["u000000001", "not an id"]}, (400, "invalid_user_id")),
    ({"mode": "users", "user_ids": ["u000000001", 42]}, (400, "invalid_user_id")),
    ({"mode": "users", "user_ids": [user_id(n) for n in range(6)]}, (400, "batch_too_large")),
    ({"mode": "invalidate", "user_ids": ["x y"]}, (400, "invalid_user_id")),
    ({"mode": "invalidate"}, (400, "invalid_body")),
    ({"mode": "incremental", "since": "2999-01-01T00:00:00Z"}, (400, "watermark_in_future")),
    ({"mode": "incremental", "since": "last tuesday"}, (400, "invalid_watermark")),
    ({"mode": "full", "from_user": "u0 OR 1=1"}, (400, "invalid_user_id")),
    ({"mode": "full", "version": 99}, (404, "unknown_feature_set")),
    ({"mode": "full", "run_id": "20200101T000000Z-000000"}, (404, "unknown_run")),
    ({"mode": "switch"}, (400, "invalid_body")),
    ({"mode": "switch", "version": 2}, (409, "version_not_materialized")),
])
def test_bad_input_is_a_4xx_with_a_clear_code(client: Any, body: dict[str, Any], expected: tuple[int, str]) -> None:
    assert error(client.post("/", json=body)) == expected


def test_not_json_and_wrong_method(client: Any) -> None:
    assert error(client.post("/", data="mode=full", content_type="application/x-www-form-urlencoded")) == (
        415, "unsupported_media_type")
    assert error(client.post("/", data=b'{"mode": "stats"}')) == (415, "unsupported_media_type")
    assert error(client.post("/", data=b"{", content_type="application/json")) == (400, "invalid_body")
    response = client.get("/")
    assert error(response) == (405, "method_not_allowed") and response.headers["Allow"] == "POST"


def test_a_workflow_loops_on_next_until_done_and_a_second_full_run_is_refused(client: Any) -> None:
    first = client.post("/", json={"mode": "full", "max_chunks": 1})
    body = first.get_json()
    assert first.status_code == 200 and body["done"] is False and body["progress"]["done"] == 1000

    refused = client.post("/", json={"mode": "full"})
    assert error(refused) == (409, "refresh_in_progress") and body["run_id"] in refused.get_json()["error"]["message"]

    calls = 1
    while not body["done"]:
        response = client.post("/", json=body["next"])
        assert response.status_code == 200
        body = response.get_json()
        calls += 1
    assert calls == 2 and body["progress"]["done"] == SEED_USERS and body["next"] is None

    stats = client.post("/", json={"mode": "stats"}).get_json()
    assert stats["versions"]["1"]["materialized"]["run_id"] == body["run_id"]
    assert stats["versions"]["1"]["full_refresh_running"] is None


def test_users_incremental_invalidate_and_switch_answer_200(client: Any) -> None:
    users = client.post("/", json={"mode": "users", "user_ids": [user_id(1), "ghost"]}).get_json()
    assert users["written"] == 2 and users["unknown_users"] == ["ghost"]

    first = client.post("/", json={"mode": "incremental"}).get_json()
    assert first["done"] is True and first["initialized"] is True  # nothing to start from: starts now
    since = client.post("/", json={"mode": "incremental", "since": "2020-01-01T00:00:00Z", "max_chunks": 1})
    assert since.status_code == 200 and since.get_json()["since"].startswith("2020-01-01T00:00:00")

    dropped = client.post("/", json={"mode": "invalidate", "user_ids": [user_id(1)]}).get_json()
    assert dropped["deleted"] == 1 and dropped["versions"] == [1, 2]
    forced = client.post("/", json={"mode": "switch", "version": 2, "force": True}).get_json()
    assert forced["version"] == 2 and forced["materialized"] is None
