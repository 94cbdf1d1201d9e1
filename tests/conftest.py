"""Fixtures over real services: PostgreSQL databases made per session, Redis key prefixes per test.

The servers come from FS_POSTGRES_HOST/PORT and FS_REDIS_URL when set (``source .local/stack.env``)
and otherwise from the machine's standard ports. Nothing here mocks a store.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pg8000.native
import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
PG_HOST = os.environ.get("FS_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("FS_POSTGRES_PORT", "5432"))
PG_USER = os.environ.get("FS_POSTGRES_USER", "postgres")
REDIS_URL = os.environ.get("FS_REDIS_URL", "redis://127.0.0.1:6379/0")
SEED_USERS = 3000
CHILD_PASSTHROUGH = ("PYTHONPATH", "COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
# How the suite serves the functions (a second pass of `make test` sets them): handed to children like the
# above, and kept by use_env, which replaces the rest of the FS_* environment.
MODE_PASSTHROUGH = ("FS_SERVING_MODE", "FS_CDC_SERVING_MODE")
# Every migrated test database has the client "test-suite" (all scopes, no practical limit) with this key,
# stored under this pepper as production stores keys (tests/functions/test_access.py tests the rest).
TEST_PEPPER = "test-pepper-0123456789abcdef0123456789abcdef"
TEST_CLIENT = "test-suite"
TEST_KEY = "fsk_testsuite001_" + "T" * 43
AUTH_HEADERS = {"X-API-Key": TEST_KEY}


def admin_connection(database: str = "postgres") -> pg8000.native.Connection:
    return pg8000.native.Connection(user=PG_USER, host=PG_HOST, port=PG_PORT, database=database)


def base_env(database: str, prefix: str | None = None) -> dict[str, str]:
    env = {
        "FS_POSTGRES_HOST": PG_HOST,
        "FS_POSTGRES_PORT": str(PG_PORT),
        "FS_POSTGRES_USER": PG_USER,
        "FS_POSTGRES_DATABASE": database,
        "FS_REDIS_URL": REDIS_URL,
        "FS_LOG_LEVEL": "WARNING",
        # The audit trail has tests of its own (tests/audit); the others read without one.
        "FS_AUDIT_SINK": "disabled",
        "FS_AUTH_KEY_PEPPER": TEST_PEPPER,
    }
    if prefix:
        env["FS_REDIS_KEY_PREFIX"] = prefix
    # A child process started with this environment loads the package this process loaded and, under
    # `make test`, is measured like it (coverage hands its configuration over in COVERAGE_PROCESS_CONFIG).
    env.update({k: v for k, v in os.environ.items() if k in CHILD_PASSTHROUGH + MODE_PASSTHROUGH})
    return env


class Databases:
    """Creates throw-away databases and drops them at the end of the session."""

    prefix = "fst_"

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self, migrated: bool = True) -> str:
        name = f"{self.prefix}{secrets.token_hex(4)}"
        admin = admin_connection()
        try:
            admin.run(f'CREATE DATABASE "{name}"')
        finally:
            admin.close()
        self.created.append(name)
        if migrated:
            migrate(name)
        return name

    def drop_all(self) -> None:
        admin = admin_connection()
        try:
            for name in self.created:
                admin.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n", n=name)
                admin.run(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            admin.close()


def migrate(database: str) -> None:
    from feature_store.services.migrations import ensure_partitions, load_migrations, month_start
    from feature_store.services.migrations import migrate as run_migrations
    from feature_store.settings import Settings
    from feature_store.stores.postgres import PostgresPool
    from feature_store.stores.sql_files import sql_root

    pool = PostgresPool(Settings.from_env(base_env(database)).postgres)
    try:
        with pool.connection() as conn:
            run_migrations(conn, load_migrations(sql_root() / "postgres"))
            today = datetime.now(UTC).date()
            ensure_partitions(conn, month_start(today, -40), month_start(today, 3))
        provision_test_client(pool)
    finally:
        pool.close()


def provision_test_client(pool: Any) -> None:
    """The client every test reads as: every group and feature set, limits no test reaches."""
    from feature_store.domain.api_keys import hash_secret, parse_key
    from feature_store.stores.api_clients import ApiClientStore, ClientFields

    store = ApiClientStore(pool)
    store.create_client(TEST_CLIENT, ClientFields(display_name="the test suite", batch_max=10_000,
                                                  rate_per_s=1_000_000.0, burst=10_000_000), exist_ok=True)
    parsed = parse_key(TEST_KEY)
    assert parsed is not None
    if not any(k.key_id == parsed[0] for k in store.keys(TEST_CLIENT)):
        store.add_key(parsed[0], TEST_CLIENT, hash_secret(TEST_PEPPER.encode(), parsed[1]), None)


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    try:
        admin_connection().close()
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not reachable ({exc}); start it (see README)")
    dbs = Databases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session")
def seeded_database(databases: Databases) -> dict[str, Any]:
    """A migrated database with SEED_USERS synthetic users, as of the start of the session."""
    from feature_store.cli.generate import seed
    from feature_store.settings import Settings
    from feature_store.stores.postgres import PostgresPool

    name = databases.create()
    as_of = datetime.now(UTC).replace(microsecond=0)
    pool = PostgresPool(Settings.from_env(base_env(name)).postgres)
    try:
        with pool.connection() as conn:
            counts = seed(conn, SEED_USERS, 42, as_of, workers=1, reset=False)
    finally:
        pool.close()
    return {"database": name, "as_of": as_of, "counts": counts}


@pytest.fixture
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not reachable ({exc}); start it (see README)")
    return client


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = "t" + secrets.token_hex(5)
    yield prefix
    drop_prefix(redis_client, prefix)


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix:`` (a test's own keys; some, like refresh state, have no TTL)."""
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def env(seeded_database: dict[str, Any], redis_prefix: str) -> dict[str, str]:
    """Settings of the seeded database and this test's Redis prefix."""
    return base_env(seeded_database["database"], redis_prefix)


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], None]]:
    """Make ``env`` the process environment for wiring.services(), and forget built services after."""
    from feature_store import wiring

    def apply(env: dict[str, str]) -> None:
        for key in [k for k in os.environ if k.startswith("FS_") and k not in MODE_PASSTHROUGH]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        wiring.reset()

    yield apply
    wiring.reset()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def break_postgres() -> None:
    """Make this process's read path lose PostgreSQL (as an outage would) without touching the server.

    The instance keeps what it resolved before (credentials, cached vectors): what an outage leaves
    a running instance with. Only the read pool is redirected to a closed port.
    """
    from feature_store import wiring
    from feature_store.stores.postgres import connect

    pool = wiring.services().postgres
    pool.close()
    gone = pool.settings.model_copy(update={"port": closed_port(), "connect_timeout_s": 1.0})
    pool._factory = lambda: connect(gone)


def function_client(name: str) -> Any:
    """The function's own app as functions-framework serves it (never ``import main``), with a test client:
    Flask's for a threaded function, tests/asgi_client.py's (the same API) for one served on an event loop."""
    import flask
    from asgi_client import AsgiClient
    from functions_framework import create_app

    source = ROOT / "functions" / name / "main.py"
    kind = "cloudevent" if "cloud_event" in source.read_text() else "http"
    app = create_app(target=name, source=str(source), signature_type=kind)
    client = app.test_client() if isinstance(app, flask.Flask) else AsgiClient(app)
    client.environ_base["HTTP_X_API_KEY"] = TEST_KEY  # the read functions need credentials; others ignore them
    return client
