"""The audit trail of functions served as production serves them (functions-framework, gunicorn), under load.

The sink is the production one (Pub/Sub through google-cloud-pubsub) pointed at this module's Publish
stand-in. Every answered read (200 or 404: the reader ran) must leave exactly one record, one row per
user, under concurrent single and batch reads, across a SIGTERM of the serving process in the middle
of the load and its restart, and across an outage of the sink (reads refused with 503
audit_unavailable past the bound, and served again after).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from pubsub_standin import PubSubStandIn

from conftest import AUTH_HEADERS, base_env
from feature_store.domain.synthetic import user_id
from served import Served

from .conftest import audit_env, wait_for

pytestmark = pytest.mark.slow


def call(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any], Message]:
    """(status, JSON body, headers: case-insensitive, as HTTP's names are; uvicorn sends them lowercase)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json", "X-Purpose": "load test",
                                              **AUTH_HEADERS})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as failed:
        return failed.code, json.loads(failed.read()), failed.headers


class Fleet:
    """Functions this test started (each in its own process group), all stopped at the end."""

    def __init__(self, env: dict[str, str], standin: PubSubStandIn, logs: Path) -> None:
        # The production bound (10 s): on this shared machine a publish under load can take a second.
        self.env = {**env, **audit_env(standin), "WORKERS": "2", "THREADS": "4", "FS_AUDIT_MAX_UNSENT_AGE_S": "10"}
        self.logs = logs
        self.started: list[Served] = []

    def __call__(self, name: str, **more: str) -> Served:
        served = Served(name, {**self.env, **more}, self.logs / f"{name}-{len(self.started)}.log")
        self.started.append(served)
        served.wait()
        return served


@pytest.fixture
def serve(env: dict[str, str], standin: PubSubStandIn, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(base_env(env["FS_POSTGRES_DATABASE"], env["FS_REDIS_KEY_PREFIX"]), standin, tmp_path)
    yield fleet
    for served in fleet.started:
        served.stop()


def recorded(standin: PubSubStandIn) -> Counter[str]:
    """Rows per request id; fails on a (request, position) delivered twice."""
    keys = [(r["request_id"], r["position"]) for r in standin.rows()]
    assert len(keys) == len(set(keys)), "an audit row was delivered twice"
    return Counter(request_id for request_id, _ in keys)


def test_n_concurrent_single_and_batch_reads_leave_exactly_n_records(serve: Fleet, standin: PubSubStandIn) -> None:
    single, batch = serve("read_features"), serve("read_features_batch")
    rng = random.Random(15)
    jobs: list[tuple[str, dict[str, Any] | None, int]] = []
    for _ in range(200):
        jobs.append((f"{single.url}/api/v1/features/user/{user_id(rng.randrange(300))}", None, 1))
    for _ in range(40):
        ids = [user_id(rng.randrange(300)) for _ in range(rng.choice((1, 10, 100)))]
        jobs.append((f"{batch.url}/api/v1/features/batch", {"user_ids": ids}, len(ids)))
    rng.shuffle(jobs)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: (call(job[0], job[1]), job[2]), jobs))

    failed = Counter((status, body.get("error", {}).get("code")) for (status, body, _), _ in answers if status != 200)
    assert not failed, failed
    expected = {body["request_id"]: users for (_, body, _), users in answers}
    assert len(expected) == len(jobs)
    wait_for(lambda: sum(recorded(standin).values()) >= sum(expected.values()))
    assert recorded(standin) == Counter(expected)


@pytest.mark.parametrize("mode", ["threaded", "async"])
def test_a_sigterm_mid_load_and_a_restart_still_leave_one_record_per_answered_read(
        serve: Fleet, standin: PubSubStandIn, mode: str) -> None:
    """Both serving modes: gunicorn's gthread workers, and uvicorn's, which killed themselves with the
    re-raised SIGTERM before the audit's atexit flush until transports/asgi.py made it a normal exit."""
    # Rows linger up to 0.2 s before a publish: a SIGTERM always finds some queued.
    first = serve("read_features", FS_AUDIT_LINGER_S="0.2", FS_SERVING_MODE=mode)
    current = {"url": first.url}
    answered: list[str] = []
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                status, body, _ = call(f"{current['url']}/api/v1/features/user/{user_id(rng.randrange(300))}")
            except OSError:  # the server is stopping or not up yet: no answer, so nothing to account for
                time.sleep(0.01)
                continue
            if status in (200, 404):
                answered.append(body["request_id"])

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(answered) >= 150)
    first.stop()  # SIGTERM to gunicorn's process group, mid-load: workers finish their requests and exit
    assert first.proc.returncode == 0, first.log.read_text()[-2000:]
    before = len(answered)
    current["url"] = serve("read_features", FS_SERVING_MODE=mode).url
    wait_for(lambda: len(answered) >= before + 150)
    stop.set()
    for t in threads:
        t.join()

    wait_for(lambda: sum(recorded(standin).values()) >= len(answered))
    time.sleep(1.0)  # anything late or doubled would show now
    assert recorded(standin) == Counter({request_id: 1 for request_id in answered})
    assert len(answered) == len(set(answered)) >= 300


def test_reads_fail_closed_while_the_sink_is_down_past_the_bound_and_resume_after(
        serve: Fleet, standin: PubSubStandIn) -> None:
    single = serve("read_features", WORKERS="1", FS_AUDIT_MAX_UNSENT_AGE_S="1")
    url = f"{single.url}/api/v1/features/user/{user_id(3)}"
    answered: list[str] = []
    status, body, _ = call(url)
    assert status == 200
    answered.append(body["request_id"])
    standin.fail = True

    refused = None
    deadline = time.monotonic() + 30
    while refused is None and time.monotonic() < deadline:
        status, body, headers = call(url)
        if status == 200:
            answered.append(body["request_id"])
        else:
            refused = (status, body, headers)
        time.sleep(0.05)

    assert refused is not None, "reads never failed closed"
    status, body, headers = refused
    assert (status, body["error"]["code"]) == (503, "audit_unavailable")
    assert int(headers["Retry-After"]) >= 1 and body["request_id"] == headers["X-Request-Id"]
    standin.fail = False
    wait_for(lambda: call(url)[0] == 200)
    status, body, _ = call(url)
    assert status == 200
    answered.append(body["request_id"])
    wait_for(lambda: all(recorded(standin)[r] == 1 for r in answered))
    assert recorded(standin)[refused[1]["request_id"]] == 0, "a refused read served nothing and records nothing"


def test_fs_grpc_drains_on_sigterm_and_flushes_one_record_per_answered_call(
        env: dict[str, str], standin: PubSubStandIn, tmp_path: Path) -> None:
    """fs-grpc (two forked workers) stopped mid-load: calls in flight are answered within --grace, then each
    worker closes its services, which flushes the audit queue before it leaves (by os._exit: no atexit)."""
    import grpc
    from grpc_serving.conftest import keyed_channel, private_port
    from grpc_serving.test_grpc_server import wait_serving

    from feature_store_client.v1 import METHODS, feature_store_pb2

    target = f"127.0.0.1:{private_port()}"
    log = tmp_path / "fs-grpc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feature_store.transports.grpc_server", "--address", target, "--workers", "2",
             "--grace", "5"],
            env={**os.environ, **env, **audit_env(standin, FS_AUDIT_LINGER_S="0.2", FS_AUDIT_MAX_UNSENT_AGE_S="10")},
            stdout=out, stderr=subprocess.STDOUT)
    answered: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        m = METHODS["GetUserFeatures"]
        with keyed_channel(target) as channel:
            stub = channel.unary_unary(m.path, request_serializer=m.request.SerializeToString,
                                       response_deserializer=m.response.FromString)
            while not stop.is_set():
                request = feature_store_pb2.GetUserFeaturesRequest(user_id=user_id(rng.randrange(300)))
                try:
                    _, done = stub.with_call(request, timeout=10, metadata=(("x-purpose", "load test"),))
                    answered.append(dict(done.trailing_metadata())["x-request-id"])
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                        answered.append(dict(exc.trailing_metadata())["x-request-id"])  # type: ignore[attr-defined]
                    else:  # the server stopped taking calls: no answer, nothing to account for
                        refused.append(exc.code().name)  # type: ignore[attr-defined]
                        time.sleep(0.01)

    try:
        wait_serving(target, proc)
        threads = [threading.Thread(target=caller, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda: len(answered) >= 200)
        proc.send_signal(signal.SIGTERM)  # the parent forwards it to both workers
        code = proc.wait(30)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    for t in threads:
        t.join()

    assert code == 0, log.read_text()[-2000:]
    # Refused, never answered: after the shutdown began (UNAVAILABLE), or received by gRPC core and not yet
    # handed to the server when it began (CANCELLED, a few per run). Neither was read: no record exists for
    # them (below).
    assert set(refused) <= {"UNAVAILABLE", "CANCELLED"}, refused
    wait_for(lambda: sum(recorded(standin).values()) >= len(answered))
    time.sleep(1.0)  # anything late or doubled would show now
    assert recorded(standin) == Counter({request_id: 1 for request_id in answered})
    assert len(answered) == len(set(answered)) >= 200
