"""cloudbuild.yaml: the steps run in the promised order and their scripts are valid shell.

Cloud Build cannot run here; these checks catch what would only fail there: a step out of
order, a shell ``$var`` Cloud Build would take for a substitution, a script that does not parse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

from .repo import FMT_STEP_VARIABLE, ROOT, cannot_run, cloudbuild, fmt_step

ORDER = ["lint", "test", "package", "upload", "plan", "apply", "check-workflows", "smoke"]
BUILT_IN = {"PROJECT_ID", "SHORT_SHA", "COMMIT_SHA", "BUILD_ID", "LOCATION", "REPO_NAME", "BRANCH_NAME"}


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
        cannot_run("bash is not installed: the steps' scripts cannot be parsed")
    build = cloudbuild()

    for step_id, script in scripts(build).items():
        shell = script.replace("$$", "$")
        done = subprocess.run([bash, "-n"], input=shell, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"step {step_id}: {done.stderr}"
        for embedded in re.findall(r"<<'PY'\n(.*?)\nPY\n", shell, re.DOTALL):
            compile(embedded, f"cloudbuild.yaml step {step_id}", "exec")


def test_terraform_format_is_checked_by_a_step_that_gates_the_deploy() -> None:
    build = cloudbuild()
    test_step = next(step for step in build["steps"] if step["id"] == "test")
    env = dict(item.split("=", 1) for item in test_step.get("env", []))
    upload = next(step for step in build["steps"] if step["id"] == "upload")

    step_id = env.get(FMT_STEP_VARIABLE)

    assert step_id, f"the test step must name the fmt step in {FMT_STEP_VARIABLE} (its image has no terraform)"
    assert fmt_step(step_id) is not None, f"step {step_id!r} does not run terraform fmt -check -recursive terraform"
    assert step_id in upload["waitFor"], "the deploy must wait for the format check"
    assert env.get("CI") == "true", "the test step runs as CI: a tool that is missing fails it instead of skipping"
