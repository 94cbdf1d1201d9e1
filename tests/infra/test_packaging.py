"""Packaging: .ci/package_functions.py builds a deploy folder that stands on its own.

The slow test installs the pinned requirements into a fresh venv (no system site packages,
no path to the repository) and loads the function from the folder alone, as Cloud Functions
would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .repo import FUNCTIONS, ROOT, cannot_run

SCRIPT = ROOT / ".ci" / "package_functions.py"

# Loads main.py from the current directory the way the runtime does (as module "main"), then
# reports where feature_store and its SQL were found.
PROBE = """
import importlib.util, json, pathlib, sys
name = sys.argv[1]
spec = importlib.util.spec_from_file_location("main", "main.py")
module = importlib.util.module_from_spec(spec)
sys.modules["main"] = module
spec.loader.exec_module(module)
import feature_store
from feature_store.stores.sql_files import sql_root
entry = getattr(module, name, None)
print(json.dumps({
    "callable": callable(entry),
    "feature_store": str(pathlib.Path(feature_store.__file__).resolve()),
    "sql_root": str(sql_root().resolve()),
}))
"""


def sample_function() -> str:
    names = sorted(p.parent.name for p in FUNCTIONS.glob("*/main.py"))
    if not names:
        cannot_run("functions/ holds no <name>/main.py to package")
    return "read_features" if "read_features" in names else names[0]


def package(name: str, out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--zip", name],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out / name


def clean_env() -> dict[str, str]:
    """The environment of the probe: nothing that points back into the repository.

    Nor coverage's hand-over (COVERAGE_PROCESS_CONFIG): the deploy folder's copy of the package is
    not the package the suite measures.
    """
    return {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} and not k.startswith(("FS_", "COVERAGE_"))
    } | {"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def pins(folder: Path) -> dict[str, str]:
    lines = [
        line for line in (folder / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")
    ]
    out = {}
    for line in lines:
        name, sep, version = line.partition("==")
        assert sep and version, f"not pinned: {line!r}"
        out[canonicalize_name(name)] = version
    return out


def test_deploy_folder_holds_main_the_package_its_sql_and_pins(tmp_path: Path) -> None:
    name = sample_function()

    folder = package(name, tmp_path)

    assert (folder / "main.py").read_bytes() == (FUNCTIONS / name / "main.py").read_bytes()
    assert (folder / "feature_store" / "settings.py").is_file()
    assert not list(folder.rglob("__pycache__"))
    for sql in ("postgres", "queries"):
        shipped = sorted(p.name for p in (folder / "feature_store" / "_sql" / sql).glob("*.sql"))
        assert shipped == sorted(p.name for p in (ROOT / "sql" / sql).glob("*.sql")) != []
    assert (folder / "feature_store" / "_sql" / "bigquery").is_dir()
    pinned = pins(folder)
    with (ROOT / "pyproject.toml").open("rb") as fh:
        wanted = [Requirement(r) for r in tomllib.load(fh)["project"]["dependencies"]]
    for req in wanted:
        name_ = canonicalize_name(req.name)
        assert pinned.get(name_) == metadata.version(req.name), f"{req.name} is not pinned to the installed version"
    assert "flask" in pinned, "functions-framework's own dependencies must be pinned too"
    assert (tmp_path / f"{name}.zip").is_file()


def test_deploy_folder_finds_its_own_package_and_sql(tmp_path: Path) -> None:
    name = sample_function()
    folder = package(name, tmp_path)

    done = subprocess.run(
        [sys.executable, "-c", PROBE, name],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["callable"] is True
    assert Path(found["feature_store"]).is_relative_to(folder.resolve())
    assert Path(found["sql_root"]) == (folder / "feature_store" / "_sql").resolve()


def test_zip_is_byte_stable(tmp_path: Path) -> None:
    name = sample_function()

    package(name, tmp_path / "a")
    package(name, tmp_path / "b")

    assert (tmp_path / "a" / f"{name}.zip").read_bytes() == (tmp_path / "b" / f"{name}.zip").read_bytes()


@pytest.mark.slow
def test_pinned_requirements_install_into_a_fresh_venv_and_load_the_function(tmp_path: Path) -> None:
    name = sample_function()
    folder = package(name, tmp_path / "build")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"

    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", "requirements.txt"],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    probe = subprocess.run(
        [str(python), "-c", PROBE, name],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    app = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, functions_framework; app = functions_framework.create_app(sys.argv[1], 'main.py'); "
            "print(sorted(app.view_functions) if hasattr(app, 'view_functions') else [r.path for r in app.routes])",
            name,
        ],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--all"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert probe.returncode == 0, probe.stderr[-4000:]
    found = json.loads(probe.stdout.strip().splitlines()[-1])
    assert found["callable"] is True
    assert Path(found["feature_store"]).is_relative_to(folder.resolve())
    assert app.returncode == 0, app.stderr[-4000:]
    installed = {canonicalize_name(line.split("==")[0]) for line in freeze.stdout.splitlines() if "==" in line}
    unpinned = installed - set(pins(folder)) - {"pip", "setuptools", "wheel"}
    assert not unpinned, f"pip installed packages requirements.txt does not pin: {sorted(unpinned)}"
