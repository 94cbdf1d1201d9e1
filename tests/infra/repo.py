"""Where the infrastructure checks find the repository, its tool venvs and the parsed Terraform.

python-hcl2 and checkov live in venvs of their own under ``.local/venvs/`` (they clobber each
other's ``hcl2`` package); ``.ci/setup_infra_venvs.sh`` makes them (``make install`` runs it).
A check whose tool is missing is skipped on a developer's machine, saying how to get it, and
FAILS under CI: there a skip would let the build pass with the check never run. CI is the
environment variable ``CI`` set to anything but empty, ``0`` or ``false`` (.ci/run runs with
``CI=true``; cloudbuild.yaml's test step sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
ENVIRONMENT = TERRAFORM / "environments" / "prod"
FUNCTIONS = ROOT / "functions"
WORKFLOWS = ROOT / "workflows"
VENVS = ROOT / ".local" / "venvs"
# Set by a CI step whose image has no terraform binary to the id of the Cloud Build step that runs
# `terraform fmt -check` (test_terraform.py then defers to that step instead of failing).
FMT_STEP_VARIABLE = "TERRAFORM_FMT_CHECKED_BY_STEP"


def in_ci() -> bool:
    """Whether this run is CI's (see the module docstring)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false"}


def cannot_run(reason: str) -> NoReturn:
    """Skip the test on a developer's machine; fail it under CI, where the check must run."""
    if in_ci():
        pytest.fail(f"{reason} (CI={os.environ['CI']}: a check that cannot run fails the build)")
    pytest.skip(reason)


def venv_python(name: str) -> Path:
    """The python of ``.local/venvs/<name>``; without it the test cannot run (see ``cannot_run``)."""
    python = VENVS / name / "bin" / "python"
    if not python.is_file():
        cannot_run(f"{python.relative_to(ROOT)} is missing: run .ci/setup_infra_venvs.sh")
    return python


@cache
def _parsed_terraform(python: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(ROOT / ".ci" / "hcl_dump.py"), str(TERRAFORM)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"python-hcl2 could not parse terraform/:\n{done.stderr}"
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def parsed_terraform() -> dict[str, Any]:
    """Every ``.tf`` file under terraform/, parsed by python-hcl2: ``{relative path: document}``."""
    return _parsed_terraform(venv_python("hcl"))


def blocks(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The blocks of one kind (``resource``, ``variable``, ``locals``, ...) of a parsed file."""
    found: list[dict[str, Any]] = document.get(kind, [])
    return found


def settings_module() -> ModuleType:
    """``feature_store.settings``, from the installed package or else from shared/."""
    try:
        import feature_store.settings as settings
    except ModuleNotFoundError:
        # Not installed in this venv: read the same source the functions are packaged from.
        sys.path.insert(0, str(ROOT / "shared"))
        import feature_store.settings as settings
    return settings


def known_env_vars() -> frozenset[str]:
    """``feature_store.settings.known_env_vars()``: every variable the package reads."""
    known: frozenset[str] = settings_module().known_env_vars()
    return known


def cloudbuild() -> dict[str, Any]:
    """cloudbuild.yaml as data (PyYAML from the checkov venv, which depends on it)."""
    try:
        import yaml
    except ModuleNotFoundError:
        python = venv_python("checkov")
        done = subprocess.run(
            [str(python), "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
             str(ROOT / "cloudbuild.yaml")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        loaded: dict[str, Any] = json.loads(done.stdout)
        return loaded
    with (ROOT / "cloudbuild.yaml").open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def fmt_step(step_id: str) -> dict[str, Any] | None:
    """The step ``step_id`` of cloudbuild.yaml if it runs ``terraform fmt -check -recursive`` on terraform/."""
    step = next((s for s in cloudbuild()["steps"] if s["id"] == step_id), None)
    if step is None or step.get("name") != "${_TERRAFORM_IMAGE}" or step.get("entrypoint") not in (None, "terraform"):
        return None
    args = step.get("args", [])
    return step if args[:1] == ["fmt"] and {"-check", "-recursive", "terraform"} <= set(args) else None
