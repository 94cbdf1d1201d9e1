"""Real servers for the client: the read functions served by functions-framework on private ports (the
client speaks HTTP, so not the in-process test client) and the gRPC server of tests/grpc_serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from grpc_serving.conftest import channel, grpc_target, private_port  # noqa: F401 - fixtures used here too

from conftest import ROOT

FF = str(Path(sys.executable).parent / "functions-framework")


class Functions:
    """read_features and read_features_batch served as production serves them, on private ports."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def serve(self, env: dict[str, str]) -> tuple[str, str]:
        urls = []
        for name in ("read_features", "read_features_batch"):
            port = private_port()
            proc = subprocess.Popen([FF, "--target", name, "--source", str(ROOT / "functions" / name / "main.py"),
                                     "--host", "127.0.0.1", "--port", str(port)],
                                    env={**os.environ, **env, "WORKERS": "1", "THREADS": "4"},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self.procs.append(proc)
            wait_listening(port, proc)
            urls.append(f"http://127.0.0.1:{port}")
        return urls[0], urls[1]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # gunicorn waits for a request stuck on a silent dependency
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the function exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")


@pytest.fixture
def functions() -> Iterator[Callable[[dict[str, str]], tuple[str, str]]]:
    served = Functions()
    yield served.serve
    served.stop()
