"""Terraform checks: it parses, it declares every function and workflow the repository has,
it gives functions only settings the package reads, and checkov finds nothing unexplained.

No Google provider can be downloaded here, so ``terraform validate`` cannot run; these checks
read the HCL with python-hcl2 (in its own venv, through .ci/hcl_dump.py) instead.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bq_ddl import DdlTable, ddl_tables

from feature_store.stores.bigquery_offline import ddl_files

from .repo import (
    FMT_STEP_VARIABLE,
    FUNCTIONS,
    ROOT,
    TERRAFORM,
    WORKFLOWS,
    blocks,
    cannot_run,
    fmt_step,
    known_env_vars,
    parsed_terraform,
    settings_module,
    venv_python,
)

# Functions declared in terraform/environments/prod (variable "functions") whose folder is
# still being written. Remove a name when functions/<name>/main.py lands: from then on the
# folder checks below cover it.
PLANNED_FUNCTIONS: set[str] = set()

# Workflows the environment refers to by name (the daily ETL job) before their file lands.
PLANNED_WORKFLOWS: set[str] = set()

# The decorator each trigger needs: the push subscription delivers CloudEvents (modules/pubsub).
DECORATOR_OF_TRIGGER = {"http": "http", "pubsub": "cloud_event"}

ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


# ---- reading the parsed HCL -----------------------------------------------------------------


def environment_file(name: str) -> dict[str, Any]:
    return parsed_terraform()[f"environments/prod/{name}"]


def functions_map() -> dict[str, dict[str, Any]]:
    """The default of ``variable "functions"`` in the environment: name => settings."""
    for block in blocks(environment_file("variables.tf"), "variable"):
        if "functions" in block:
            default: dict[str, dict[str, Any]] = block["functions"]["default"]
            return default
    raise AssertionError('terraform/environments/prod/variables.tf declares no variable "functions"')


def function_folders() -> dict[str, Path]:
    """functions/<name>/ folders that hold a main.py."""
    return {p.parent.name: p for p in sorted(FUNCTIONS.glob("*/main.py"))}


# Helpers of transports/functions.py that register an HTTP function under the name they are given.
REGISTRARS = {"read_function": "http", "threaded_function": "http", "ingest_function": "cloud_event"}


def top_level_functions(main_py: Path) -> dict[str, list[str]]:
    """Functions defined at the top of a main.py (parsed, never imported) => decorator names.

    ``name = read_function("name", ...)`` counts as a function ``name`` registered as HTTP when the name it
    registers (its first argument) is the one it is bound to.
    """
    tree = ast.parse(main_py.read_text(), filename=str(main_py))
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id in REGISTRARS
                and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and node.value.args
                and isinstance(node.value.args[0], ast.Constant) and node.value.args[0].value == node.targets[0].id):
            out[node.targets[0].id] = [REGISTRARS[node.value.func.id]]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = []
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Attribute):
                    names.append(target.attr)
                elif isinstance(target, ast.Name):
                    names.append(target.id)
            out[node.name] = names
    return out


def env_names(value: Any) -> Iterator[str]:
    """Upper-case keys anywhere in a literal map (lower-case keys group them: cloudsql, redis)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if ENV_NAME.match(key):
                yield key
            else:
                yield from env_names(inner)
    elif isinstance(value, list):
        for item in value:
            yield from env_names(item)


def function_env_names() -> dict[str, set[str]]:
    """Every environment variable name Terraform can give a function => where it is written.

    The places: the ``env`` of each entry of the functions map, the environment's locals whose
    name ends in ``_env`` (what each kind of access adds), literal ``environment`` and
    ``secret_environment`` arguments of a call to modules/function, and literal
    ``environment_variables`` of any resource.
    """
    found: dict[str, set[str]] = {}

    def add(names: Iterator[str], where: str) -> None:
        for name in names:
            found.setdefault(name, set()).add(where)

    for fn_name, fn in functions_map().items():
        add(env_names(fn.get("env", {})), f'variable "functions" > {fn_name}.env')
    for path, document in parsed_terraform().items():
        for block in blocks(document, "locals"):
            for local, value in block.items():
                if local.endswith("_env"):
                    add(env_names(value), f"{path}: local.{local}")
        for block in blocks(document, "module"):
            for call, args in block.items():
                if str(args.get("source", "")).endswith("modules/function"):
                    for arg in ("environment", "secret_environment"):
                        add(env_names(args.get(arg, {})), f"{path}: module.{call}.{arg}")
        for block in blocks(document, "resource"):
            for rtype, named in block.items():
                for rname, body in named.items():
                    for config in body.get("service_config", []) + body.get("build_config", []):
                        add(
                            env_names(config.get("environment_variables", {})),
                            f"{path}: {rtype}.{rname}.environment_variables",
                        )
    return found


def resource(path: str, rtype: str, rname: str) -> dict[str, Any]:
    for block in blocks(parsed_terraform()[path], "resource"):
        if rtype in block and rname in block[rtype]:
            found: dict[str, Any] = block[rtype][rname]
            return found
    raise AssertionError(f"{path} declares no {rtype}.{rname}")


# ---- parsing --------------------------------------------------------------------------------


def test_every_terraform_file_parses_with_python_hcl2() -> None:
    on_disk = {p.relative_to(TERRAFORM).as_posix() for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts}

    parsed = parsed_terraform()

    assert on_disk, "terraform/ holds no .tf file"
    assert set(parsed) == on_disk


def test_terraform_files_are_formatted() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        step = os.environ.get(FMT_STEP_VARIABLE)
        if step:  # Cloud Build's test step: its image has no terraform, Terraform's own image checks
            assert fmt_step(step) is not None, f"{FMT_STEP_VARIABLE}={step}, but cloudbuild.yaml has no such fmt step"
            pytest.skip(f"terraform fmt -check runs as Cloud Build step {step!r}")
        cannot_run("the terraform binary is not installed (fmt needs no provider, but needs terraform)")

    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, f"run `terraform fmt -recursive terraform`:\n{done.stdout}"


# ---- functions ------------------------------------------------------------------------------


def test_every_function_folder_is_declared_with_its_entry_point_and_trigger() -> None:
    declared = functions_map()
    folders = function_folders()
    assert folders, "functions/ holds no <name>/main.py"

    for name, main_py in folders.items():
        assert name in declared, (
            f'functions/{name}/ has no entry in variable "functions" (terraform/environments/prod/variables.tf)'
        )
        defined = top_level_functions(main_py)
        assert name in defined, (
            f"functions/{name}/main.py defines no top-level function {name!r}: the entry point is the folder name"
        )
        trigger = declared[name]["trigger"]
        decorator = DECORATOR_OF_TRIGGER[trigger]
        assert decorator in defined[name], (
            f"functions/{name} is declared with trigger {trigger!r}, so {name}() needs "
            f"@functions_framework.{decorator}; it has {defined[name] or 'no decorator'}"
        )


def test_every_declared_function_has_a_folder_or_is_planned() -> None:
    declared = set(functions_map())

    missing = declared - set(function_folders()) - PLANNED_FUNCTIONS

    assert not missing, f'declared in variable "functions" but functions/<name>/main.py is missing: {sorted(missing)}'


def test_planned_functions_are_declared() -> None:
    assert set(functions_map()) >= PLANNED_FUNCTIONS, "PLANNED_FUNCTIONS names a function the map does not declare"


def test_entry_point_check_reads_definitions_not_names(tmp_path: Path) -> None:
    source = (
        "import functions_framework\n"
        "read_features = None\n"
        "@functions_framework.cloud_event\n"
        "def ingest_changes(event):\n"
        "    def inner():\n"
        "        pass\n"
    )
    main_py = tmp_path / "main.py"
    main_py.write_text(source)

    defined = top_level_functions(main_py)

    assert defined == {"ingest_changes": ["cloud_event"]}


def test_every_function_environment_variable_is_a_setting() -> None:
    known = known_env_vars()

    found = function_env_names()

    unknown = {name: sorted(where) for name, where in found.items() if name not in known}
    assert not unknown, f"not read by feature_store.settings (known_env_vars()): {unknown}"
    # The scan must see the wiring, or it proves nothing.
    assert {"FS_POSTGRES_PASSWORD", "FS_REDIS_URL", "FS_POSTGRES_DIALECT", "FS_LOG_LEVEL"} <= set(found)


def test_env_scan_finds_names_nested_under_groups() -> None:
    value = {"cloudsql": {"FS_POSTGRES_HOST": "x"}, "redis": {}, "FS_NOT_A_SETTING": "1"}

    assert set(env_names(value)) == {"FS_POSTGRES_HOST", "FS_NOT_A_SETTING"}


def test_no_fs_variable_anywhere_in_terraform_is_unknown() -> None:
    known = known_env_vars()
    mentioned = {
        (path.relative_to(TERRAFORM).as_posix(), name)
        for path in TERRAFORM.rglob("*.tf")
        for name in re.findall(r"\bFS_[A-Z0-9_]+\b", path.read_text())
    }

    unknown = sorted((path, name) for path, name in mentioned if name not in known)

    assert mentioned
    assert not unknown, f"FS_ names that feature_store.settings does not read: {unknown}"


# Connections kept free for the CDC relay, fs-migrate and an operator's psql.
RESERVED_CONNECTIONS = 50


def test_postgres_pools_fit_in_max_connections() -> None:
    default_pool = settings_module().PostgresSettings.model_fields["pool_size"].default
    variables = {
        k: v
        for block in blocks(parsed_terraform()["modules/cloudsql/variables.tf"], "variable")
        for k, v in block.items()
    }
    max_connections = variables["max_connections"]["default"]

    worst = {
        name: fn["max_instances"] * int(fn.get("env", {}).get("FS_POSTGRES_POOL_SIZE", default_pool))
        for name, fn in functions_map().items()
    }

    assert sum(worst.values()) <= max_connections - RESERVED_CONNECTIONS, (
        f"max_instances x FS_POSTGRES_POOL_SIZE per function {worst} adds up to {sum(worst.values())}, "
        f"over max_connections {max_connections} less {RESERVED_CONNECTIONS} kept free"
    )


def test_functions_get_environment_only_from_the_checked_inputs() -> None:
    fn = resource("modules/function/main.tf", "google_cloudfunctions2_function", "this")
    service = fn["service_config"][0]
    secret_blocks = [
        d["secret_environment_variables"] for d in service.get("dynamic", []) if "secret_environment_variables" in d
    ]

    assert service["environment_variables"] == "${var.environment}"
    assert "environment_variables" not in fn["build_config"][0]
    assert "secret_environment_variables" not in service, "secrets come only through the dynamic block"
    assert [b["for_each"] for b in secret_blocks] == ["${var.secret_environment}"]
    assert secret_blocks[0]["content"][0]["key"] == "${secret_environment_variables.key}"


def test_function_module_is_gen2_python311_with_entry_point_equal_to_name() -> None:
    fn = resource("modules/function/main.tf", "google_cloudfunctions2_function", "this")
    build, service = fn["build_config"][0], fn["service_config"][0]

    assert build["runtime"] == "python311"
    assert build["entry_point"] == "${var.name}" and fn["name"] == "${var.name}"
    assert service["vpc_connector"] == "${var.vpc_connector}"
    assert service["max_instance_request_concurrency"] == "${var.concurrency}"
    assert service["service_account_email"] == "${google_service_account.this.email}"


# ---- Pub/Sub --------------------------------------------------------------------------------


def test_cdc_push_subscription_has_dead_letter_and_retry_policy() -> None:
    sub = resource("modules/pubsub/main.tf", "google_pubsub_subscription", "ingest")

    assert sub["push_config"][0]["oidc_token"][0]["audience"] == "${var.push_endpoint}"
    assert sub["dead_letter_policy"][0]["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert sub["retry_policy"][0]["minimum_backoff"]
    call = next(
        args
        for block in blocks(environment_file("main.tf"), "module")
        for name, args in block.items()
        if name == "pubsub"
    )
    assert call["topic"] == "cdc-changes"


def test_every_changelog_table_has_a_bigquery_subscription_filtered_on_its_table() -> None:
    """stores/pubsub_changelog.py publishes every change with attribute table = its source table; each
    changelog_<table> of sql/bigquery/changelog.sql needs the subscription that writes it, or rows pile up."""
    from feature_store.stores.pubsub_changelog import TABLE_ATTRIBUTE

    variables = {name: args for block in blocks(parsed_terraform()["modules/pubsub/variables.tf"], "variable")
                 for name, args in block.items()}
    tables = set(variables["changelog_tables"]["default"])
    ddl = {name.removeprefix("changelog_") for name in ddl_tables([ROOT / "sql" / "bigquery" / "changelog.sql"])
           if name.startswith("changelog_")}
    assert tables == ddl
    call = next(args for block in blocks(parsed_terraform()["modules/pubsub/main.tf"], "module")
                for name, args in block.items() if name == "changelog")
    assert call["source"] == "../bigquery_topic"
    subscriptions = call["subscriptions"]
    assert subscriptions.startswith("${{for table in var.changelog_tables") and '"changelog_${table}"' in subscriptions
    assert f'attributes.{TABLE_ATTRIBUTE} = \\"${{table}}\\"' in subscriptions
    sub = resource("modules/bigquery_topic/main.tf", "google_pubsub_subscription", "bigquery")
    assert sub["filter"] == "${each.value.filter}" and sub["bigquery_config"][0]["use_table_schema"] is True
    assert sub["bigquery_config"][0]["table"] == "${var.project_id}.${var.dataset}.${each.value.table}"
    assert sub["dead_letter_policy"][0]["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    ingest = functions_map()["ingest_changes"]
    assert "changelog" in ingest["access"] and "bigquery" not in ingest["access"], \
        "in production ingest_changes publishes its changelog and needs no BigQuery access"


# ---- workflows ------------------------------------------------------------------------------


def _fileset_calls() -> list[tuple[str, str, str]]:
    """Every ``fileset(path, pattern)`` with literal arguments in terraform/: (file, path, pattern)."""
    calls = []
    for path in TERRAFORM.rglob("*.tf"):
        for dir_arg, pattern in re.findall(r'fileset\(\s*"([^"]+)"\s*,\s*"([^"]+)"\s*\)', path.read_text()):
            calls.append((path.relative_to(TERRAFORM).as_posix(), dir_arg, pattern))
    return calls


def test_every_workflow_file_is_deployed_through_fileset() -> None:
    covering = []
    for tf_file, dir_arg, pattern in _fileset_calls():
        module_dir = (TERRAFORM / tf_file).parent
        directory = Path(dir_arg.replace("${path.module}", str(module_dir))).resolve()
        if directory == WORKFLOWS.resolve():
            covering.append(pattern)
    assert covering, "no fileset() over workflows/ in terraform/"

    uncovered = [
        p.name
        for p in WORKFLOWS.glob("*")
        if p.is_file()
        and p.suffix in {".yaml", ".yml"}
        and not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in covering)
    ]

    assert not uncovered, f"workflow files not matched by {covering}: {uncovered}"


def test_the_fileset_feeds_the_workflows_module() -> None:
    main = environment_file("main.tf")
    local_values = {k: v for block in blocks(main, "locals") for k, v in block.items()}
    call = next(args for block in blocks(main, "module") for name, args in block.items() if name == "workflows")
    workflow = resource("modules/workflows/main.tf", "google_workflows_workflow", "this")

    assert "fileset(" in local_values["workflow_files"]
    assert "local.workflow_files" in local_values["workflows"]
    assert call["workflows"] == "${local.workflows}"
    assert workflow["for_each"] == "${var.workflows}"


def test_workflows_named_by_the_environment_exist_or_are_planned() -> None:
    default = next(
        block["etl_workflow"]["default"]
        for block in blocks(environment_file("variables.tf"), "variable")
        if "etl_workflow" in block
    )

    assert (WORKFLOWS / f"{default}.yaml").is_file() or default in PLANNED_WORKFLOWS


# ---- BigQuery -------------------------------------------------------------------------------

BIGQUERY = TERRAFORM / "modules" / "bigquery"
REQUIRED_TABLES = {
    "transactions",
    "users",
    "risk_scores",
    "installment_plans",
    "installments",
    "changelog_users",
    "changelog_transactions",
    "changelog_risk_scores",
    "changelog_installment_plans",
    "changelog_installments",
    "feature_snapshots",
    "etl_watermarks",
    "etl_runs",
}
TYPE_ALIASES = {
    "INT64": "INTEGER",
    "FLOAT64": "FLOAT",
    "BOOL": "BOOLEAN",
    "BIGDECIMAL": "BIGNUMERIC",
    "DECIMAL": "NUMERIC",
}


def bigquery_tables() -> dict[str, dict[str, Any]]:
    local_values = {
        k: v for block in blocks(parsed_terraform()["modules/bigquery/main.tf"], "locals") for k, v in block.items()
    }
    tables: dict[str, dict[str, Any]] = local_values["tables"]
    return tables


def test_bigquery_declares_every_table_with_a_schema_file() -> None:
    tables = bigquery_tables()
    schema_files = {p.stem for p in (BIGQUERY / "schemas").glob("*.json")}

    assert set(tables) >= REQUIRED_TABLES
    assert set(tables) == schema_files
    for name in schema_files:
        columns = json.loads((BIGQUERY / "schemas" / f"{name}.json").read_text())
        names = [c["name"] for c in columns]
        assert len(names) == len(set(names)), f"{name}: duplicate columns"
        partition = tables[name]["partition"]
        if partition is not None:
            assert partition in names, f"{name} is partitioned on {partition!r}, not a column"
        for column in tables[name]["cluster"]:
            assert column in names, f"{name} is clustered on {column!r}, not a column"
    assert tables["transactions"] == {"partition": "created_at", "cluster": ["user_id", "merchant"]}
    assert tables["feature_snapshots"]["partition"] == "snapshot_date"


def _ddl_tables(directory: Path | None = None) -> dict[str, DdlTable]:
    """The CREATE TABLEs of sql/bigquery/ with Terraform's (legacy SQL) type names."""
    return {name: t._replace(columns={c: (TYPE_ALIASES.get(kind, kind), mode) for c, (kind, mode) in t.columns.items()})
            for name, t in ddl_tables(ddl_files(directory)).items()}


def test_bigquery_schemas_match_the_ddl_in_sql_bigquery() -> None:
    ddl = _ddl_tables()
    if not ddl:
        cannot_run("sql/bigquery/ holds no CREATE TABLE yet")
    tables = bigquery_tables()

    declared = {}
    for name in tables:
        columns = json.loads((BIGQUERY / "schemas" / f"{name}.json").read_text())
        declared[name] = {
            c["name"]: (TYPE_ALIASES.get(c["type"].upper(), c["type"].upper()), c.get("mode", "NULLABLE"))
            for c in columns
        }

    assert set(ddl) == set(declared), (
        f"only in sql/bigquery: {sorted(set(ddl) - set(declared))}; "
        f"only in terraform: {sorted(set(declared) - set(ddl))}"
    )
    for name, table in ddl.items():
        assert table.columns == declared[name], (
            f"{name}: sql/bigquery has {table.columns}, terraform has {declared[name]}"
        )
        assert (table.partition, table.cluster) == (tables[name]["partition"], tables[name]["cluster"]), name


def test_ddl_reader_sees_types_modes_partitioning_and_clustering(tmp_path: Path) -> None:
    sql = tmp_path / "sql" / "bigquery"
    sql.mkdir(parents=True)
    (sql / "x.sql").write_text(
        "CREATE TABLE IF NOT EXISTS `{dataset}.t` (\n  a STRING NOT NULL, -- note, with a comma\n"
        "  b INT64,\n  c TIMESTAMP NOT NULL\n)\nPARTITION BY DATE(c)\nCLUSTER BY a, b;\n"
        "CREATE OR REPLACE VIEW `{dataset}.v` AS SELECT 1;\n"
    )
    ddl = _ddl_tables(sql)

    assert ddl == {
        "t": DdlTable(
            {"a": ("STRING", "REQUIRED"), "b": ("INTEGER", "NULLABLE"), "c": ("TIMESTAMP", "REQUIRED")}, "c", ["a", "b"]
        )
    }


# ---- checkov --------------------------------------------------------------------------------


def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason() -> None:
    python = venv_python("checkov")
    checkov = python.parent / "checkov"

    done = subprocess.run(
        [str(checkov), "-d", str(TERRAFORM), "--compact", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )

    assert done.stdout.strip(), f"checkov printed nothing:\n{done.stderr[-2000:]}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
        for r in reports
        for c in r["results"].get("failed_checks", [])
    ]
    skipped = [c for r in reports for c in r["results"].get("skipped_checks", [])]
    errors = [e for r in reports for e in r["results"].get("parsing_errors", [])]
    passed = sum(r["summary"]["passed"] for r in reports)
    assert not errors, f"checkov could not parse: {errors}"
    assert not failed, "checkov failed checks (fix them, or skip with a reason in the code):\n" + "\n".join(failed)
    assert passed > 50, "checkov passed almost nothing: did it scan terraform/?"
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for c in skipped
        if len(c["check_result"].get("suppress_comment", "").strip()) < 20
        or c["check_result"]["suppress_comment"] == "No comment provided"
    ]
    assert not unexplained, f"skips without a reason: {unexplained}"
    assert done.returncode == 0


def test_every_checkov_skip_comment_carries_a_reason() -> None:
    skip = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")

    bare = [
        f"{path.relative_to(ROOT)}: {m.group(1)}"
        for path in TERRAFORM.rglob("*.tf")
        for m in skip.finditer(path.read_text())
        if len((m.group(2) or "").strip()) < 20
    ]

    assert not bare, f"write why after the check id (#checkov:skip=CKV_...:reason): {bare}"
