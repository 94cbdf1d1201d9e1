"""feature_store_client stands on its own: its wheel holds only itself, and it imports nothing of the server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import feature_store_client
from conftest import ROOT

CLIENT = ROOT / "shared" / "feature_store_client"
SERVER_SIDE = {"feature_store", "functions_framework", "flask", "redis", "pg8000", "pydantic", "orjson", "google"}


def test_the_public_names_are_these() -> None:
    assert sorted(feature_store_client.__all__) == [
        "DeadlineExceeded", "FeatureStoreClient", "FeatureStoreClientError", "FeatureVector", "HistoricalFeatures",
        "InvalidRequest", "NotFound", "OnlineFeatures", "PermissionDenied", "RateLimited", "ServerError",
        "Unauthenticated", "Unavailable"]


@pytest.mark.slow
def test_its_wheel_builds_from_its_own_pyproject_and_imports_without_the_server(tmp_path: Path) -> None:
    source = tmp_path / "feature_store_client"  # a copy: setuptools leaves build/ and egg-info beside the sources
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w",
                            str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheel").glob("feature_store_client-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path / "site")
        tops = {name.split("/")[0] for name in z.namelist()}
    assert tops == {"feature_store_client", "-".join(wheel.name.split("-")[:2]) + ".dist-info"}

    # -S: no site hooks, so the editable install of feature_store is not importable; only the wheel and the
    # venv's third-party packages (urllib3, grpcio, protobuf) are on the path.
    probe = ("import json, sys; import feature_store_client; from feature_store_client import FeatureStoreClient; "
             "from feature_store_client.v1 import METHODS; FeatureStoreClient.over_rest('http://127.0.0.1:1'); "
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    paths = [str(tmp_path / "site"), sysconfig.get_paths()["purelib"]]
    done = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {paths!r}; {probe}"],
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert not loaded & (SERVER_SIDE - {"google"}), loaded & SERVER_SIDE
    assert "feature_store_client" in loaded
