"""read_features and read_features_batch through functions-framework's own app, on real stores.

Every response body is validated against docs/openapi.yaml.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
import yaml
from jsonschema import Draft202012Validator

from conftest import ROOT, admin_connection, break_postgres, closed_port, function_client
from feature_store.domain.catalog import CATALOG
from feature_store.domain.synthetic import user_id
from reference import reference_features

OPENAPI = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def conforms(body: dict[str, Any], schema: str) -> dict[str, Any]:
    """``body`` itself after checking it against ``components/schemas/<schema>`` of the OpenAPI document."""
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema}", "components": OPENAPI["components"]})
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, errors
    return body


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture
def single(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Any:
    use_env(env)
    return function_client("read_features")


@pytest.fixture
def batch(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> Any:
    use_env(env)
    return function_client("read_features_batch")


def test_miss_then_hit_returns_the_exact_vector(single: Any, seeded_database: dict[str, Any]) -> None:
    uid = user_id(42)

    first = single.get(f"/api/v1/features/user/{uid}")
    second = single.get(f"/api/v1/features/user/{uid}")

    assert first.status_code == 200 and second.status_code == 200
    a, b = conforms(first.get_json(), "FeatureVector"), conforms(second.get_json(), "FeatureVector")
    assert (a["cache_hit"], b["cache_hit"]) == (False, True)
    assert a["degraded"] is False and b["degraded"] is False
    assert a["source_watermark"] == b["source_watermark"] and "/" in a["source_watermark"]
    conn = admin_connection(seeded_database["database"])
    try:
        for body in (a, b):
            assert body["features"] == reference_features(conn, uid, epoch(body["as_of"]))
    finally:
        conn.close()


def test_a_feature_subset_is_exactly_those_features(single: Any, seeded_database: dict[str, Any]) -> None:
    response = single.get(f"/api/v1/features/user/{user_id(7)}?features=orders_1h,age,on_time_rate")

    body = conforms(response.get_json(), "FeatureVector")
    assert response.status_code == 200
    conn = admin_connection(seeded_database["database"])
    try:
        full = reference_features(conn, user_id(7), epoch(body["as_of"]))
    finally:
        conn.close()
    assert full is not None
    assert body["features"] == {
        "demographics": {"age": full["demographics"]["age"]},
        "repayment": {"on_time_rate": full["repayment"]["on_time_rate"]},
        "velocity": {"orders_1h": full["velocity"]["orders_1h"]},
    }


def test_unknown_user_is_404(single: Any) -> None:
    response = single.get("/api/v1/features/user/u999999999")
    assert response.status_code == 404
    assert conforms(response.get_json(), "Error")["error"]["code"] == "unknown_user"


@pytest.mark.parametrize("path", [
    "/api/v1/features/user/",
    "/api/v1/features/user/" + "a" * 65,
    "/api/v1/features/user/abc%01def",
    "/api/v1/features/user/1%27%3B%20DROP%20TABLE%20users%3B--",
    "/api/v1/features/user/%20u1",
])
def test_malformed_ids_are_400_with_a_sentence(single: Any, path: str) -> None:
    response = single.get(path)
    body = conforms(response.get_json(), "Error")
    assert response.status_code == 400
    assert body["error"]["code"] == "invalid_user_id"
    assert body["error"]["message"].startswith("user_id ")


def test_unknown_feature_and_bad_version(single: Any) -> None:
    r1 = single.get(f"/api/v1/features/user/{user_id(1)}?features=age,credit_scroe")
    r2 = single.get(f"/api/v1/features/user/{user_id(1)}?version=zero")
    r3 = single.get(f"/api/v1/features/user/{user_id(1)}?version=99")
    assert (r1.status_code, r1.get_json()["error"]["code"]) == (400, "unknown_feature")
    assert "credit_scroe" in r1.get_json()["error"]["message"]
    assert (r2.status_code, r2.get_json()["error"]["code"]) == (400, "invalid_parameter")
    assert (r3.status_code, r3.get_json()["error"]["code"]) == (404, "unknown_feature_set")


def test_wrong_method_and_route(single: Any, batch: Any) -> None:
    post = single.post(f"/api/v1/features/user/{user_id(1)}")
    get = batch.get("/api/v1/features/batch")
    route = single.get("/api/v2/whatever")
    assert (post.status_code, post.headers["Allow"]) == (405, "GET, HEAD")
    assert (get.status_code, get.headers["Allow"]) == (405, "POST")
    assert conforms(post.get_json(), "Error")["error"]["code"] == "method_not_allowed"
    assert (route.status_code, route.get_json()["error"]["code"]) == (404, "route_not_found")


def test_batch_answers_in_request_order_with_per_id_status(batch: Any, seeded_database: dict[str, Any]) -> None:
    ids = [user_id(5), "u999999999", user_id(6), user_id(5)]

    response = batch.post("/api/v1/features/batch", json={"user_ids": ids})

    body = conforms(response.get_json(), "BatchResponse")
    assert response.status_code == 200
    assert [(r["user_id"], r["status"]) for r in body["results"]] == [
        (user_id(5), "ok"), ("u999999999", "unknown_user"), (user_id(6), "ok"), (user_id(5), "ok")]
    assert body["counts"] == {"ok": 3, "unknown_user": 1, "unavailable": 0}
    assert body["results"][0] == body["results"][3]
    conn = admin_connection(seeded_database["database"])
    try:
        assert body["results"][2]["features"] == reference_features(conn, user_id(6), epoch(body["as_of"]))
    finally:
        conn.close()


def test_batch_duplicates_are_read_once(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> None:
    use_env(env)
    from feature_store.wiring import services

    client = function_client("read_features_batch")
    client.post("/api/v1/features/batch", json={"user_ids": [user_id(9)] * 50 + [user_id(10)]})
    assert services().reader.counter.drain() == {("credit_decision", 1): (0, 2, 0)}


def test_batch_of_a_hundred_mixed_hits_and_misses(batch: Any) -> None:
    warm = [user_id(n) for n in range(200, 250)]
    batch.post("/api/v1/features/batch", json={"user_ids": warm, "features": ["orders_7d"]})
    ids = [user_id(n) for n in range(200, 300)]

    body = batch.post("/api/v1/features/batch", json={"user_ids": ids, "features": ["orders_7d"]}).get_json()

    assert [r["cache_hit"] for r in body["results"]] == [True] * 50 + [False] * 50
    assert all(set(r["features"]) == {"velocity"} for r in body["results"])


@pytest.mark.parametrize(("payload", "code"), [
    (b"not json", "invalid_body"),
    (b"", "invalid_body"),
    (b"[1, 2]", "invalid_body"),
    (b'{"ids": ["u1"]}', "invalid_body"),
    (b'{"user_ids": "u1"}', "invalid_body"),
    (b'{"user_ids": []}', "invalid_body"),
    (b'{"user_ids": ["u1"], "extra": 1}', "invalid_body"),
    (b'{"user_ids": [1, 2]}', "invalid_user_id"),
    (b'{"user_ids": ["ok", "no way"]}', "invalid_user_id"),
    (b'{"user_ids": ["u1"], "features": ["nope"]}', "unknown_feature"),
    (b'{"user_ids": ["u1"], "features": ["Bad Name"]}', "invalid_body"),
])
def test_batch_bad_bodies_are_400(batch: Any, payload: bytes, code: str) -> None:
    response = batch.post("/api/v1/features/batch", data=payload, content_type="application/json")
    body = conforms(response.get_json(), "Error")
    assert (response.status_code, body["error"]["code"]) == (400, code)


def test_batch_over_the_limit_is_refused(batch: Any) -> None:
    response = batch.post("/api/v1/features/batch", json={"user_ids": [f"u{n}" for n in range(1001)]})
    body = conforms(response.get_json(), "Error")
    assert (response.status_code, body["error"]["code"]) == (400, "batch_too_large")
    assert "1001" in body["error"]["message"] and "1000" in body["error"]["message"]


def test_redis_down_answers_from_postgres_marked_degraded(
        env: dict[str, str], use_env: Callable[[dict[str, str]], None], seeded_database: dict[str, Any]) -> None:
    use_env({**env, "FS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"})
    client = function_client("read_features")

    response = client.get(f"/api/v1/features/user/{user_id(11)}")

    body = conforms(response.get_json(), "FeatureVector")
    assert response.status_code == 200
    assert (body["degraded"], body["degraded_reason"], body["cache_hit"]) == (True, "redis_unavailable", False)
    conn = admin_connection(seeded_database["database"])
    try:
        assert body["features"] == reference_features(conn, user_id(11), epoch(body["as_of"]))
    finally:
        conn.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a Redis slower than any timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for s in held:
        s.close()
    server.close()


def test_slow_redis_times_out_and_then_the_breaker_opens(
        env: dict[str, str], use_env: Callable[[dict[str, str]], None], silent_server: int) -> None:
    # A timeout counts against the breaker only when the call did not overrun it twice (starvation):
    # 50 ms leaves room for a busy CI machine. No minimum failing time: the third failure opens it.
    use_env({**env, "FS_REDIS_URL": f"redis://127.0.0.1:{silent_server}/0", "FS_REDIS_SOCKET_TIMEOUT_MS": "50",
             "FS_SERVING_BREAKER_FAILURES": "3", "FS_SERVING_BREAKER_RESET_S": "60",
             "FS_SERVING_BREAKER_MIN_FAILING_S": "0"})
    client = function_client("read_features")

    reasons = [client.get(f"/api/v1/features/user/{user_id(12)}").get_json()["degraded_reason"] for _ in range(5)]

    assert reasons == ["redis_timeout"] * 3 + ["redis_circuit_open"] * 2


def test_postgres_down_on_a_miss_is_503_with_retry_hint(
        env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> None:
    # Credentials are resolved again on every request (no cache time): they come from the last good copy.
    use_env({**env, "FS_AUTH_CACHE_S": "0"})
    client = function_client("read_features")
    assert client.get(f"/api/v1/features/user/{user_id(13)}").status_code == 200
    break_postgres()

    miss = client.get(f"/api/v1/features/user/{user_id(14)}")
    hit = client.get(f"/api/v1/features/user/{user_id(13)}")

    assert miss.status_code == 503
    assert miss.headers["Retry-After"] == "1"
    body = conforms(miss.get_json(), "Error")
    assert body["error"]["code"] == "dependency_unavailable" and body["error"]["retry_after_s"] == 1
    assert hit.status_code == 200 and hit.get_json()["cache_hit"] is True


def test_postgres_down_in_a_batch_marks_only_the_misses(
        env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> None:
    use_env({**env, "FS_AUTH_CACHE_S": "0"})
    function_client("read_features").get(f"/api/v1/features/user/{user_id(15)}")
    break_postgres()

    body = function_client("read_features_batch").post(
        "/api/v1/features/batch", json={"user_ids": [user_id(15), user_id(16)]}).get_json()

    assert [r["status"] for r in body["results"]] == ["ok", "unavailable"]
    assert body["counts"] == {"ok": 1, "unknown_user": 0, "unavailable": 1}


def test_openapi_lists_every_catalog_feature_with_its_type() -> None:
    schemas = OPENAPI["components"]["schemas"]
    json_types = {"int64": "integer", "float64": "number", "string": "string"}
    for fs in CATALOG.values():
        for f in fs.features:
            declared = schemas[f.group.capitalize()]["properties"][f.name]["type"]
            assert declared == ([json_types[f.dtype], "null"] if f.default is None else json_types[f.dtype]), f.name


def test_v2_vectors_equal_the_reference_including_its_two_new_features(
        single: Any, batch: Any, seeded_database: dict[str, Any]) -> None:
    ids = [user_id(n) for n in range(400, 460)]
    one = single.get(f"/api/v1/features/user/{ids[0]}?version=2")
    many = batch.post("/api/v1/features/batch", json={"user_ids": ids, "version": 2})

    first, body = conforms(one.get_json(), "FeatureVector"), conforms(many.get_json(), "BatchResponse")
    assert (one.status_code, first["version"], many.status_code, body["version"]) == (200, 2, 200, 2)
    conn = admin_connection(seeded_database["database"])
    try:
        assert first["features"] == reference_features(conn, ids[0], epoch(first["as_of"]), version=2)
        expected = [reference_features(conn, uid, epoch(body["as_of"]), version=2) for uid in ids]
    finally:
        conn.close()
    assert [r["features"] for r in body["results"]] == expected
    # The seed gives some of these users orders in the last hour and week: the new features are exercised.
    velocity = [v["velocity"] for v in expected if v is not None]
    assert any(v["amount_1h"] > 0 for v in velocity) and any(v["avg_order_value_7d"] > 0 for v in velocity)


def test_redis_key_written_by_the_read_path_follows_the_layout(
        single: Any, redis_client: redis.Redis, redis_prefix: str) -> None:
    single.get(f"/api/v1/features/user/{user_id(17)}")
    raw = redis_client.get(f"{redis_prefix}:s3:u:{user_id(17)}")
    assert raw is not None and raw[24] == 3
    assert 0 < redis_client.pttl(f"{redis_prefix}:s3:u:{user_id(17)}") <= 7 * 86400 * 1000
