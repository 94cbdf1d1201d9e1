"""Terraform of the migration: its functions, the second subscription on cdc-changes, the target's secret and
settings (read with python-hcl2, as tests/infra/test_terraform.py does)."""

from __future__ import annotations

from .repo import blocks, known_env_vars, parsed_terraform
from .test_terraform import environment_file, functions_map, resource


def test_both_migration_functions_are_declared_with_the_target_and_only_the_callers_they_need() -> None:
    functions = functions_map()

    replicate, run = functions["replicate_changes"], functions["run_migration"]

    assert replicate["trigger"] == "pubsub" and replicate["invokers"] == ["pubsub_push"]
    assert run["trigger"] == "http" and run["invokers"] == ["workflows"] and run["max_instances"] == 1
    for name in ("replicate_changes", "run_migration", "read_features", "read_features_batch", "ingest_changes",
                 "refresh_cache"):
        assert "migration" in functions[name]["access"], name  # their reads follow the routing pointer


def test_the_replication_has_its_own_push_subscription_on_the_same_topic() -> None:
    sub = resource("modules/pubsub/main.tf", "google_pubsub_subscription", "replicate")
    ingest = resource("modules/pubsub/main.tf", "google_pubsub_subscription", "ingest")
    call = next(args for block in blocks(environment_file("main.tf"), "module") for name, args in block.items()
                if name == "pubsub")

    assert sub["topic"] == ingest["topic"] == "${google_pubsub_topic.changes.id}"
    assert sub["name"] != ingest["name"]
    assert sub["push_config"][0]["push_endpoint"] == "${var.replicate_endpoint}"
    assert sub["push_config"][0]["oidc_token"][0]["audience"] == "${var.replicate_endpoint}"
    assert sub["dead_letter_policy"][0]["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert "replicate_function" in call["replicate_endpoint"]


def test_the_target_connection_is_a_secret_and_settings_the_package_reads() -> None:
    main = environment_file("main.tf")
    local_values = {k: v for block in blocks(main, "locals") for k, v in block.items()}
    secrets_call = next(args for block in blocks(main, "module") for name, args in block.items() if name == "secrets")

    assert "fs-migration-target-password" in secrets_call["secrets"]
    assert "fs-migration-target-password" not in str(secrets_call["managed_versions"])  # never in state
    migration_env = str(local_values["access_env"]["migration"])
    names = {n for n in known_env_vars() if n in migration_env}
    assert {"FS_MIGRATION_TARGET_HOST", "FS_MIGRATION_TARGET_PORT", "FS_MIGRATION_TARGET_DIALECT"} <= names
    assert "FS_MIGRATION_TARGET_PASSWORD" in str(local_values["access_secret_env"]["migration"])


def test_the_migration_workflow_is_deployed_by_the_fileset() -> None:
    # workflows/*.yaml are deployed by name (test_terraform.py checks the fileset); the workflow calls
    # run_migration by the RUN_MIGRATION_URL every workflow gets.
    from .repo import WORKFLOWS

    text = (WORKFLOWS / "migration.yaml").read_text()

    assert 'sys.get_env("RUN_MIGRATION_URL"' in text
    assert "environments/prod/main.tf" in parsed_terraform()
