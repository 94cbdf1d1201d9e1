"""Where the infrastructure checks find the repository, its tool venvs and the parsed Terraform.

python-hcl2 and checkov live in venvs of their own under ``.local/venvs/`` (they clobber each
other's ``hcl2`` package); ``.ci/setup_infra_venvs.sh`` makes them. A check whose venv is
missing is skipped, saying how to make it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
ENVIRONMENT = TERRAFORM / "environments" / "prod"
FUNCTIONS = ROOT / "functions"
WORKFLOWS = ROOT / "workflows"
VENVS = ROOT / ".local" / "venvs"


def venv_python(name: str) -> Path:
    """The python of ``.local/venvs/<name>``, or skip the test saying how to make it."""
    python = VENVS / name / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"{python.relative_to(ROOT)} is missing: run .ci/setup_infra_venvs.sh")
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
