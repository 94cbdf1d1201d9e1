"""Who may read: credentials, scopes and rate limits of the read functions, on real PostgreSQL and Redis.

Clients and keys are made with fs-keys itself (cli/keys.py); the functions run in functions-framework's
own app, and as two separate served processes for the limit shared between instances. Exact statuses
and codes; bodies checked against docs/openapi.yaml.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from test_read_features import conforms

from conftest import break_postgres, closed_port, function_client
from feature_store.domain.catalog import get_feature_set
from feature_store.domain.synthetic import user_id
from served import Served

Keys = Callable[..., tuple[int, list[dict[str, Any]]]]


@pytest.fixture
def fs_keys(capfd: pytest.CaptureFixture[str]) -> Keys:
    """Run fs-keys in this process (over the environment ``use_env`` made current): exit code, JSON lines."""
    from feature_store.cli import keys

    def run(*args: str) -> tuple[int, list[dict[str, Any]]]:
        capfd.readouterr()
        code = keys.main(list(args))
        out = capfd.readouterr().out
        return code, [json.loads(line) for line in out.splitlines() if line.strip()]

    return run


@pytest.fixture
def access_env(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> dict[str, str]:
    """The test's environment with credentials resolved on every request (no cache time), made current."""
    env = {**env, "FS_AUTH_CACHE_S": "0"}
    use_env(env)
    return env


def new_client(fs_keys: Keys, name: str, *options: str) -> str:
    """A client (every scope unless ``options`` say otherwise) and its key."""
    suffix = f"{time.monotonic_ns() % 10**9}"
    client = f"{name}-{suffix}"
    defaults = {"--groups": "all", "--feature-sets": "all"}
    given = dict(zip(options[::2], options[1::2], strict=True))
    argv = [a for k, v in {**defaults, **given}.items() for a in (k, v)]
    code, _ = fs_keys("clients", "create", client, *argv)
    assert code == 0
    code, made = fs_keys("keys", "create", client)
    assert code == 0
    return str(made[0]["key"])


def key_owner(fs_keys: Keys, key: str) -> str:
    return next(str(k["client_id"]) for k in fs_keys("keys", "list")[1] if k["key_id"] == key.split("_")[1])


def read(key: str | None, uid: str = user_id(1), query: str = "") -> Any:
    client = function_client("read_features")
    client.environ_base.pop("HTTP_X_API_KEY")
    headers = {} if key is None else {"X-API-Key": key}
    return client.get(f"/api/v1/features/user/{uid}{query}", headers=headers)


def read_batch(key: str, ids: list[str], **extra: Any) -> Any:
    client = function_client("read_features_batch")
    return client.post("/api/v1/features/batch", json={"user_ids": ids, **extra}, headers={"X-API-Key": key})


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_json()
    body = conforms(response.get_json(), "Error")
    assert body["error"]["code"] == code
    return body["error"]


# --- identity ---------------------------------------------------------------------------------------


def test_no_credentials_is_401_unauthenticated_with_a_challenge(access_env: dict[str, str]) -> None:
    single = read(None)
    batch = function_client("read_features_batch")
    batch.environ_base.pop("HTTP_X_API_KEY")
    many = batch.post("/api/v1/features/batch", json={"user_ids": [user_id(1)]})

    for response in (single, many):
        error(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("key", ["nonsense", "fsk_short_x", "fsk_abcdefghijkl_" + "A" * 43, "Bearer"])
def test_a_malformed_or_unknown_key_is_401_invalid_credentials(access_env: dict[str, str], key: str) -> None:
    answer = error(read(key), 401, "invalid_credentials")
    assert "A" * 10 not in answer["message"]  # the secret is never echoed


def test_a_known_key_id_with_a_wrong_secret_is_401(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "wrong-secret")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")

    assert read(key).status_code == 200
    error(read(forged), 401, "invalid_credentials")


def test_bearer_carries_an_api_key_too(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "bearer")
    client = function_client("read_features")
    client.environ_base.pop("HTTP_X_API_KEY")

    assert client.get(f"/api/v1/features/user/{user_id(1)}", headers={"Authorization": f"Bearer {key}"}).status_code \
        == 200
    error(client.get(f"/api/v1/features/user/{user_id(1)}", headers={"Authorization": f"Basic {key}"}), 401,
          "invalid_credentials")


def test_a_revoked_key_is_401(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "revoked")
    key_id = key.split("_")[1]
    assert read(key).status_code == 200

    assert fs_keys("keys", "revoke", key_id)[0] == 0

    assert "revoked" in error(read(key), 401, "invalid_credentials")["message"]


def test_revocation_takes_effect_within_the_cache_time(env: dict[str, str], use_env: Callable[[dict[str, str]], None],
                                                       fs_keys: Keys) -> None:
    use_env({**env, "FS_AUTH_CACHE_S": "1"})
    key = new_client(fs_keys, "cached")
    assert read(key).status_code == 200
    fs_keys("keys", "revoke", key.split("_")[1])

    still = read(key).status_code  # within the cache time: the instance has not looked again
    time.sleep(1.1)

    assert (still, read(key).status_code) == (200, 401)


def test_an_expired_key_is_401_and_rotation_keeps_the_old_key_for_its_grace(access_env: dict[str, str],
                                                                             fs_keys: Keys) -> None:
    old = new_client(fs_keys, "rotated")
    code, rotated = fs_keys("keys", "rotate", old.split("_")[1], "--grace-hours", "1")
    new = rotated[0]["new"]["key"]
    assert code == 0 and rotated[0]["old"]["replaced_by"] == new.split("_")[1]
    assert (read(old).status_code, read(new).status_code) == (200, 200)  # both work during the grace

    code, again = fs_keys("keys", "rotate", new.split("_")[1], "--grace-hours", "0")
    assert code == 0

    assert "expired" in error(read(new), 401, "invalid_credentials")["message"]
    assert read(again[0]["new"]["key"]).status_code == 200


def test_a_disabled_client_is_403(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "disabled")

    assert fs_keys("clients", "disable", key_owner(fs_keys, key))[0] == 0

    error(read(key), 403, "client_disabled")


def test_postgres_down_resolving_a_new_key_is_503_and_a_resolved_one_still_reads(
        access_env: dict[str, str], fs_keys: Keys) -> None:
    seen, unseen = new_client(fs_keys, "seen"), new_client(fs_keys, "unseen")
    assert read(seen, user_id(30)).status_code == 200

    break_postgres()

    assert read(seen, user_id(30)).get_json()["cache_hit"] is True
    error(read(unseen, user_id(30)), 503, "dependency_unavailable")


# --- scopes -------------------------------------------------------------------------------------------


def test_a_named_feature_outside_the_scope_is_403_naming_it(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "velocity", "--groups", "velocity,risk")

    answer = error(read(key, query="?features=orders_24h,age,risk_score,income_bracket"), 403,
                   "feature_out_of_scope")

    assert answer["features"] == ["age", "income_bracket"]
    assert read(key, query="?features=orders_24h,risk_score").status_code == 200
    error(read(key, query="?features=nope"), 400, "unknown_feature")  # unknown before out of scope


def test_all_features_returns_only_those_in_scope_and_says_which_were_withheld(access_env: dict[str, str],
                                                                              fs_keys: Keys) -> None:
    key = new_client(fs_keys, "scoped", "--groups", "velocity,risk")
    fs = get_feature_set("credit_decision", 1)

    single = read(key, query="?version=1")
    many = read_batch(key, [user_id(2), user_id(3)], version=1)

    body = conforms(single.get_json(), "FeatureVector")
    batch = conforms(many.get_json(), "BatchResponse")
    expected_withheld = [f.name for f in fs.features if f.group not in ("velocity", "risk")]
    assert set(body["features"]) == {"velocity", "risk"}
    assert body["withheld_features"] == batch["withheld_features"] == expected_withheld
    assert all(set(r["features"]) == {"velocity", "risk"} for r in batch["results"])
    unscoped = read(new_client(fs_keys, "unscoped"), query="?version=1").get_json()
    assert "withheld_features" not in unscoped and len(unscoped["features"]) == len(fs.groups)


def test_a_version_outside_the_scope_is_403(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "v1only", "--feature-sets", "credit_decision:1")

    assert read(key, query="?version=1").status_code == 200
    error(read(key, query="?version=2"), 403, "feature_set_out_of_scope")
    error(read_batch(key, [user_id(1)], version=2), 403, "feature_set_out_of_scope")


def test_a_batch_above_the_clients_batch_max_is_403(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "small", "--batch-max", "3", "--burst", "10")

    assert read_batch(key, [user_id(n) for n in range(3)]).status_code == 200
    answer = error(read_batch(key, [user_id(n) for n in range(4)]), 403, "batch_over_client_limit")
    assert "batch_max is 3" in answer["message"]


# --- rate limits ----------------------------------------------------------------------------------------


def test_over_the_rate_is_429_with_retry_after(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "slow", "--rate", "0.1", "--burst", "3", "--batch-max", "3")

    statuses = [read(key, user_id(n)).status_code for n in range(3)]
    refused = read(key, user_id(4))

    assert statuses == [200, 200, 200]
    answer = error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 10 and answer["retry_after_s"] == int(
        refused.headers["Retry-After"])


def test_a_batch_straddling_the_limit_is_refused_whole_and_consumes_nothing(access_env: dict[str, str],
                                                                           fs_keys: Keys) -> None:
    key = new_client(fs_keys, "straddle", "--rate", "0.1", "--burst", "5", "--batch-max", "5")

    first = read_batch(key, [user_id(n) for n in range(3)])
    straddling = read_batch(key, [user_id(n) for n in range(3, 6)])  # 3 + 3 > 5
    rest = read_batch(key, [user_id(n) for n in range(6, 8)])  # the 2 left: the refused batch took nothing
    over = read_batch(key, [user_id(9)])

    assert (first.status_code, rest.status_code) == (200, 200)
    error(straddling, 429, "rate_limited")
    error(over, 429, "rate_limited")


def test_a_batch_costs_one_unit_per_distinct_user(access_env: dict[str, str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "dupes", "--rate", "0.1", "--burst", "4", "--batch-max", "4")

    assert read_batch(key, [user_id(1)] * 4).status_code == 200  # one user: one unit
    assert read_batch(key, [user_id(n) for n in range(2, 5)]).status_code == 200
    error(read_batch(key, [user_id(9)]), 429, "rate_limited")


@pytest.fixture
def two_instances(access_env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    # A Redis read timing out (10 ms, a loaded machine) would serve from the source, unlimited (fail open):
    # this test is about the limit being shared, so Redis gets time to answer.
    patient = {**access_env, "FS_REDIS_SOCKET_TIMEOUT_MS": "1000"}
    served = [Served("read_features", patient, tmp_path / f"instance{n}.log") for n in (1, 2)]
    try:
        for s in served:
            s.wait()
        yield [s.url for s in served]
    finally:
        for s in served:
            s.stop()


def test_the_limit_is_global_across_two_instances(two_instances: list[str], fs_keys: Keys) -> None:
    key = new_client(fs_keys, "global", "--rate", "0.1", "--burst", "4", "--batch-max", "4")
    http = urllib3.PoolManager(retries=False)

    statuses = [http.request("GET", f"{two_instances[n % 2]}/api/v1/features/user/{user_id(n)}",
                             headers={"X-API-Key": key}, timeout=30).status for n in range(8)]

    # Per-process limits would admit 4 on each instance; the shared one admits 4 in all.
    assert statuses == [200] * 4 + [429] * 4


def test_redis_down_fails_open_counted(env: dict[str, str], use_env: Callable[[dict[str, str]], None],
                                       fs_keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    from feature_store.wiring import services

    use_env(env)
    key = new_client(fs_keys, "open", "--rate", "0.1", "--burst", "1", "--batch-max", "1")
    use_env({**env, "FS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0", "FS_LOG_LEVEL": "WARNING"})
    caplog.clear()

    answers = [read(key, user_id(n)) for n in (40, 41, 42)]  # a limit of 1 would refuse two of them

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(a.get_json()["degraded"] for a in answers)
    assert services().reader.unlimited == 3
    events = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "rate_limit_fail_open"]
    assert len(events) == 3 and {r.levelname for r in events} == {"WARNING"}
    assert {r.fields["client_id"] for r in events} == {key_owner(fs_keys, key)}  # type: ignore[attr-defined]


def test_redis_down_fails_closed_when_configured(env: dict[str, str], use_env: Callable[[dict[str, str]], None],
                                                 fs_keys: Keys) -> None:
    use_env(env)
    key = new_client(fs_keys, "closed")
    use_env({**env, "FS_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
             "FS_AUTH_RATE_LIMIT_FAIL_OPEN": "false"})

    error(read(key, user_id(43)), 503, "dependency_unavailable")


# --- fs-keys ------------------------------------------------------------------------------------------------


def test_fs_keys_lifecycle(access_env: dict[str, str], fs_keys: Keys) -> None:
    client = f"lender-{time.monotonic_ns() % 10**9}"
    code, made = fs_keys("clients", "create", client, "--groups", "velocity", "--feature-sets", "credit_decision",
                         "--batch-max", "50", "--rate", "20", "--burst", "60", "--google-principal", f"{client}@x.iam")
    assert code == 0 and made[0]["feature_groups"] == ["velocity"] and made[0]["batch_max"] == 50

    code, updated = fs_keys("clients", "update", client, "--groups", "velocity,risk", "--rate", "5")
    assert code == 0 and updated[0]["feature_groups"] == ["risk", "velocity"] and updated[0]["rate_per_s"] == 5.0
    code, updated = fs_keys("clients", "update", client, "--groups", "all")
    assert code == 0 and updated[0]["feature_groups"] is None

    code, key = fs_keys("keys", "create", client, "--expires-in-days", "30")
    assert code == 0 and key[0]["key"].startswith(f"fsk_{key[0]['key_id']}_") and key[0]["expires_at"]
    code, listed = fs_keys("keys", "list", "--client", client)
    assert code == 0 and [k["key_id"] for k in listed] == [key[0]["key_id"]]
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert key[0]["key"].split("_", 2)[2] not in json.dumps(listed)

    code, clients = fs_keys("clients", "list")
    assert code == 0 and client in [c["client_id"] for c in clients]
    assert fs_keys("keys", "revoke", key[0]["key_id"])[1][0]["revoked_at"] is not None
    assert fs_keys("clients", "disable", client)[1][0]["disabled_at"] is not None


@pytest.mark.parametrize(("argv", "exit_code", "code"), [
    (["clients", "create", "Bad Id!", "--groups", "all", "--feature-sets", "all"], 2, "invalid_client_id"),
    (["clients", "create", "ok-id", "--groups", "nope", "--feature-sets", "all"], 2, "unknown_feature_group"),
    (["clients", "create", "ok-id", "--groups", "all", "--feature-sets", "credit_decision:9"], 2,
     "unknown_feature_set"),
    (["clients", "create", "ok-id", "--groups", "all", "--feature-sets", "all", "--batch-max", "10", "--burst", "5"],
     2, "burst_below_batch_max"),
    (["clients", "update", "no-such-client", "--rate", "3"], 3, "unknown_client"),
    (["keys", "create", "no-such-client"], 3, "unknown_client"),
    (["keys", "revoke", "nosuchkey000"], 3, "unknown_key"),
    (["keys", "rotate", "nosuchkey000"], 3, "unknown_key"),
])
def test_fs_keys_bad_input_exits_with_a_code_and_a_sentence(access_env: dict[str, str], fs_keys: Keys,
                                                            capfd: pytest.CaptureFixture[str], argv: list[str],
                                                            exit_code: int, code: str) -> None:
    from feature_store.cli import keys

    capfd.readouterr()
    assert keys.main(argv) == exit_code
    err = capfd.readouterr().err
    assert f"[{code}]" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["clients"], ["keys", "create"], ["clients", "create", "x", "--rate", "-1",
                                                                        "--groups", "all", "--feature-sets", "all"]])
def test_fs_keys_usage_errors_exit_2(access_env: dict[str, str], argv: list[str],
                                     capfd: pytest.CaptureFixture[str]) -> None:
    from feature_store.cli import keys

    with pytest.raises(SystemExit) as exited:
        keys.main(argv)
    assert exited.value.code == 2 and "Traceback" not in capfd.readouterr().err


def test_fs_keys_duplicate_client_and_taken_principal_are_refused(access_env: dict[str, str], fs_keys: Keys,
                                                                  capfd: pytest.CaptureFixture[str]) -> None:
    first = f"dup-{time.monotonic_ns() % 10**9}"
    assert fs_keys("clients", "create", first, "--groups", "all", "--feature-sets", "all",
                   "--google-principal", f"{first}@x")[0] == 0

    from feature_store.cli import keys

    assert fs_keys("clients", "create", first, "--groups", "all", "--feature-sets", "all")[0] == 3
    capfd.readouterr()
    assert keys.main(["clients", "create", first + "b", "--groups", "all", "--feature-sets", "all",
                      "--google-principal", f"{first}@x"]) == 3
    assert "[principal_taken]" in capfd.readouterr().err
