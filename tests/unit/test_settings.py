"""Settings read the environment once and name every bad variable."""

from __future__ import annotations

import pytest

from feature_store.errors import SettingsError
from feature_store.settings import Settings, known_env_vars

GOOD = {"FS_POSTGRES_HOST": "127.0.0.1", "FS_REDIS_URL": "redis://127.0.0.1:6379/0"}


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    return caught.value.problems


def test_minimal_environment_gives_documented_defaults() -> None:
    settings = Settings.from_env(GOOD)
    assert settings.postgres.host == "127.0.0.1"
    assert settings.postgres.port == 5432
    assert settings.postgres.dialect == "postgresql"
    assert settings.require_redis().url == "redis://127.0.0.1:6379/0"
    assert settings.serving.batch_max == 1000


def test_missing_connection_names_both_variables() -> None:
    (problem,) = problems({})
    assert "FS_POSTGRES_HOST" in problem and "FS_POSTGRES_INSTANCE_CONNECTION_NAME" in problem


def test_each_bad_variable_is_named_with_what_is_wrong() -> None:
    found = problems({**GOOD, "FS_POSTGRES_PORT": "fivefour", "FS_REDIS_URL": "http://x",
                      "FS_SERVING_BATCH_MAX": "0"})
    assert any(p.startswith("FS_POSTGRES_PORT:") and "integer" in p for p in found)
    assert any(p.startswith("FS_REDIS_URL:") and "redis" in p for p in found)
    assert any(p.startswith("FS_SERVING_BATCH_MAX:") and "greater than or equal to 1" in p for p in found)
    assert len(found) == 3


def test_unknown_prefixed_variable_is_refused() -> None:
    assert problems({**GOOD, "FS_POSTGRES_HOTS": "x"}) == ["FS_POSTGRES_HOTS: not a setting this package reads"]


def test_redis_is_required_only_where_used() -> None:
    settings = Settings.from_env({"FS_POSTGRES_HOST": "db"})
    with pytest.raises(SettingsError) as caught:
        settings.require_redis()
    assert caught.value.problems == ["FS_REDIS_URL: required but not set"]


def test_password_never_appears_in_repr() -> None:
    settings = Settings.from_env({**GOOD, "FS_POSTGRES_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert settings.postgres.password is not None
    assert settings.postgres.password.get_secret_value() == "hunter2"


def test_cloud_sql_instance_name_is_checked() -> None:
    found = problems({"FS_POSTGRES_INSTANCE_CONNECTION_NAME": "not a name", "FS_REDIS_URL": "redis://r"})
    assert any(p.startswith("FS_POSTGRES_INSTANCE_CONNECTION_NAME:") for p in found)
    ok = Settings.from_env({"FS_POSTGRES_INSTANCE_CONNECTION_NAME": "proj:europe-west1:fs-db"})
    assert ok.postgres.instance_connection_name == "proj:europe-west1:fs-db"


def test_pubsub_emulator_host_is_read_under_its_standard_name() -> None:
    settings = Settings.from_env({**GOOD, "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})
    assert settings.pubsub.emulator_host == "127.0.0.1:8085"


def test_known_env_vars_lists_every_field() -> None:
    names = known_env_vars()
    assert {"FS_POSTGRES_HOST", "FS_REDIS_URL", "FS_BIGQUERY_API_ENDPOINT", "FS_LOG_LEVEL",
            "PUBSUB_EMULATOR_HOST"} <= names
    assert "FS_POSTGRES_HOTS" not in names


def test_cloud_sql_connector_dials_the_private_address_by_default() -> None:
    from google.cloud.sql.connector import IPTypes

    settings = Settings.from_env({"FS_POSTGRES_INSTANCE_CONNECTION_NAME": "proj:europe-west1:fs-db"})
    assert IPTypes._from_str(settings.postgres.ip_type) is IPTypes.PRIVATE
    public = Settings.from_env({"FS_POSTGRES_INSTANCE_CONNECTION_NAME": "p:r:i", "FS_POSTGRES_IP_TYPE": "public"})
    assert IPTypes._from_str(public.postgres.ip_type) is IPTypes.PUBLIC


@pytest.mark.parametrize(("setting", "build"), [("FS_CDC_CHANGELOG_SINK", "changelog"), ("FS_AUDIT_SINK", "audit")])
def test_a_pubsub_sink_without_its_project_names_both_variables(setting: str, build: str) -> None:
    from feature_store.wiring import Services

    services = Services(Settings.from_env({**GOOD, setting: "pubsub"}))
    with pytest.raises(SettingsError) as caught:
        getattr(services, build)
    (problem,) = caught.value.problems
    assert "FS_PUBSUB_PROJECT" in problem and f"{setting}=pubsub" in problem
    services.close()


def test_the_changelog_sink_and_topic_are_checked() -> None:
    assert Settings.from_env(GOOD).cdc.changelog_sink == "bigquery"  # the local stack's: no Pub/Sub here
    assert Settings.from_env({**GOOD, "FS_CDC_CHANGELOG_TOPIC": "cdc-changelog-2"}).cdc.changelog_topic == \
        "cdc-changelog-2"
    (problem,) = problems({**GOOD, "FS_CDC_CHANGELOG_SINK": "kafka"})
    assert "FS_CDC_CHANGELOG_SINK" in problem
    (problem,) = problems({**GOOD, "FS_CDC_CHANGELOG_TOPIC": "1 bad topic"})
    assert "FS_CDC_CHANGELOG_TOPIC" in problem


def test_the_serving_mode_is_async_unless_threaded_is_asked_and_anything_else_is_refused() -> None:
    from feature_store.settings import serving_mode

    assert serving_mode({}) == "async" and serving_mode({"FS_SERVING_MODE": ""}) == "async"
    assert serving_mode({"FS_SERVING_MODE": "threaded"}) == "threaded"
    with pytest.raises(SettingsError, match="FS_SERVING_MODE: must be async or threaded"):
        serving_mode({"FS_SERVING_MODE": "gevent"})


def test_the_cdc_serving_mode_is_async_unless_threaded_is_asked_and_anything_else_is_refused() -> None:
    from feature_store.settings import cdc_serving_mode

    assert cdc_serving_mode({}) == "async" and cdc_serving_mode({"FS_CDC_SERVING_MODE": ""}) == "async"
    assert cdc_serving_mode({"FS_CDC_SERVING_MODE": "threaded"}) == "threaded"
    assert cdc_serving_mode({"FS_SERVING_MODE": "threaded"}) == "async"  # the read functions' setting is theirs
    with pytest.raises(SettingsError, match="FS_CDC_SERVING_MODE: must be async or threaded"):
        cdc_serving_mode({"FS_CDC_SERVING_MODE": "gevent"})


def test_a_problem_names_its_variables_and_never_quotes_a_value() -> None:
    from feature_store.settings import cdc_serving_mode, serving_mode

    secret = "hunter2-not-a-setting"
    errors = []
    for refuse in (lambda: Settings.from_env({**GOOD, "FS_REDIS_URL": f"http://user:{secret}@cache:6379",
                                              "FS_POSTGRES_PORT": secret, "FS_SERVING_MODE": secret}),
                   lambda: serving_mode({"FS_SERVING_MODE": secret}),
                   lambda: cdc_serving_mode({"FS_CDC_SERVING_MODE": secret})):
        with pytest.raises(SettingsError) as caught:
            refuse()
        errors.append(caught.value)

    assert [e.variables for e in errors] == [["FS_POSTGRES_PORT", "FS_REDIS_URL", "FS_SERVING_MODE"],
                                             ["FS_SERVING_MODE"], ["FS_CDC_SERVING_MODE"]]
    assert all(secret not in e.message and e.status == 500 and e.code == "invalid_settings" for e in errors)


def test_a_missing_connection_is_named_by_its_two_variables_only() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({})
    assert caught.value.variables == ["FS_POSTGRES_HOST", "FS_POSTGRES_INSTANCE_CONNECTION_NAME"]
