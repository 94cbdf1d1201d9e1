"""Fixtures of the audit trail's tests: a Pub/Sub stand-in and the environment that points the sink at it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pubsub_standin import PubSubStandIn


@pytest.fixture
def standin() -> Iterator[PubSubStandIn]:
    server = PubSubStandIn().start()
    yield server
    server.stop()


def audit_env(standin: PubSubStandIn, **more: str) -> dict[str, str]:
    """Settings that send the audit trail to ``standin`` through the production sink, with short bounds."""
    return {"FS_AUDIT_SINK": "pubsub", "FS_PUBSUB_PROJECT": "audit-project",
            "FS_PUBSUB_EMULATOR_HOST": standin.address, "FS_AUDIT_MAX_UNSENT_AGE_S": "1",
            "FS_AUDIT_RETRY_BACKOFF_S": "0.05", "FS_AUDIT_PUBLISH_TIMEOUT_S": "1", "FS_AUDIT_LINGER_S": "0.002",
            **more}


def wait_for(condition: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
