"""The committed generated code is what `make proto` makes from shared/proto today."""

from __future__ import annotations

import subprocess

from infra.repo import ROOT, venv_python


def test_regenerating_the_grpc_code_changes_nothing() -> None:
    python = venv_python("protoc")  # skipped on a machine without it, a failure under CI

    done = subprocess.run([str(python), str(ROOT / ".ci" / "generate_proto.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
