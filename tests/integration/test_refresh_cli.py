"""fs-refresh: exit codes, JSON answers, and Ctrl-C keeping the checkpoint of a run that resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from conftest import ROOT, SEED_USERS
from feature_store.cli.refresh import main
from feature_store.stores.redis_online import KeyLayout
from feature_store.stores.redis_refresh import RefreshState


@pytest.fixture
def cli_env(env: dict[str, str], use_env: Callable[[dict[str, str]], None]) -> dict[str, str]:
    full = {**env, "FS_REFRESH_CHUNK_USERS": "500"}
    use_env(full)
    return full


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_modes_answer_json_and_refusals_have_their_exit_codes(
        cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, full, err = run(["full"], capsys)
    assert code == 0 and full["done"] is True and full["progress"]["done"] == SEED_USERS
    assert f"run {full['run_id']}" in err

    assert run(["invalidate", "--version", "2"], capsys)[0] == 3  # refused: the served v1 reads the same states
    assert run(["users", "not an id"], capsys)[0] == 2
    assert run(["incremental", "--since", "2999-01-01T00:00:00Z"], capsys)[0] == 2
    assert run(["full", "--run-id", "../../etc"], capsys)[0] == 2
    code, stats, _ = run(["stats"], capsys)
    assert code == 0 and stats["versions"]["1"]["materialized"]["run_id"] == full["run_id"]


def test_ctrl_c_exits_130_keeps_the_checkpoint_and_the_run_resumes(
        cli_env: dict[str, str], redis_client: redis.Redis, redis_prefix: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FS_")}, **cli_env,
           # One user per chunk: thousands of chunks, so the run is still going when the (possibly
           # descheduled) test gets round to interrupting it; 10 per chunk finished in 2 s under load.
           "FS_REFRESH_CHUNK_USERS": "1", "PYTHONUNBUFFERED": "1"}
    # Ctrl-C's default action in the child whatever this process inherited: a shell starts background
    # jobs (`cmd &`, as a CI runner may) with SIGINT ignored, and an ignored signal survives exec.
    proc = subprocess.Popen([sys.executable, "-m", "feature_store.cli.refresh", "full"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("fs-refresh: run "), line
    run_id = line.split()[-1]
    checkpoint = RefreshState(redis_client, KeyLayout(redis_prefix), 60).run_key(run_id)
    deadline = time.monotonic() + 60
    while int(redis_client.hget(checkpoint, "done") or 0) == 0:
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate(timeout=60)
            pytest.fail("the refresh checkpointed no chunk within 60 s")
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    assert f"fs-refresh full --run-id {run_id}" in err and "Traceback" not in err
    done = int(redis_client.hget(checkpoint, "done") or 0)
    assert 0 < done < SEED_USERS and redis_client.ttl(checkpoint) == -1  # kept, without an expiry

    code, resumed, _ = run(["full", "--run-id", run_id], capsys)

    assert code == 0 and resumed["done"] is True and resumed["run_id"] == run_id
    assert resumed["progress"]["done"] == SEED_USERS and resumed["written"] == SEED_USERS - done
