"""cloudbuild.yaml: the steps run in the promised order and their scripts are valid shell.

Cloud Build cannot run here; these checks catch what would only fail there: a step out of
order, a shell ``$var`` Cloud Build would take for a substitution, a script that does not parse.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from .repo import ROOT, venv_python

ORDER = ["lint", "test", "package", "upload", "plan", "apply", "check-workflows", "smoke"]
BUILT_IN = {"PROJECT_ID", "SHORT_SHA", "COMMIT_SHA", "BUILD_ID", "LOCATION", "REPO_NAME", "BRANCH_NAME"}


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


def scripts(build: dict[str, Any]) -> dict[str, str]:
    return {
        step["id"]: step["args"][1]
        for step in build["steps"]
        if step.get("entrypoint") in {"bash", "sh"} and step.get("args", [])[:1] == ["-c"]
    }


def test_steps_run_in_order_and_deploy_through_terraform() -> None:
    build = cloudbuild()
    ids = [step["id"] for step in build["steps"]]

    assert [i for i in ids if i in ORDER] == ORDER
    text = (ROOT / "cloudbuild.yaml").read_text()
    assert "gcloud functions deploy" not in text.replace("never runs `gcloud functions deploy`", "")
    test_step = next(step for step in build["steps"] if step["id"] == "test")
    assert "make test" in test_step["args"][1]
    package_step = next(step for step in build["steps"] if step["id"] == "package")
    assert ".ci/package_functions.py" in package_step["args"]


def test_substitutions_are_declared_and_shell_dollars_escaped() -> None:
    build = cloudbuild()
    declared = set(build["substitutions"]) | BUILT_IN

    for step_id, script in scripts(build).items():
        used = set(re.findall(r"(?<!\$)\$\{?([A-Za-z_][A-Za-z0-9_]*)", script))
        undeclared = used - declared
        assert not undeclared, f"step {step_id}: {sorted(undeclared)} would be read as substitutions: write $$name"


def test_step_scripts_parse() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    build = cloudbuild()

    for step_id, script in scripts(build).items():
        shell = script.replace("$$", "$")
        done = subprocess.run([bash, "-n"], input=shell, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"step {step_id}: {done.stderr}"
        for embedded in re.findall(r"<<'PY'\n(.*?)\nPY\n", shell, re.DOTALL):
            compile(embedded, f"cloudbuild.yaml step {step_id}", "exec")
