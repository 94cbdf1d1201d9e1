"""`make services` on a fresh server: emulators/postgres_setup.py turns a cluster with Debian's defaults
(wal_level = replica; output plugins restricted where the server has output_plugin_libraries) into one
the relay can use with wal2json, and a second run changes nothing (no restart)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from .servers import ROOT, PrivatePostgres

pytestmark = pytest.mark.faults

sys.path.insert(0, str(ROOT / "emulators"))
from postgres_setup import prepare  # noqa: E402


@pytest.fixture
def fresh_cluster() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(port=55442, name="fsfresh")
    pg.create(fresh=True)
    yield pg
    pg.drop()


def settings(pg: PrivatePostgres) -> tuple[str, str, str]:
    conn = pg.admin()
    try:
        level = conn.run("SELECT current_setting('wal_level')")[0][0]
        plugins = conn.run("SELECT coalesce((SELECT setting FROM pg_settings WHERE name = "
                           "'output_plugin_libraries'), 'unrestricted')")[0][0]
        started = conn.run("SELECT pg_postmaster_start_time()::text")[0][0]
        return str(level), str(plugins), str(started)
    finally:
        conn.close()


def test_a_fresh_server_is_made_ready_for_cdc_once(fresh_cluster: PrivatePostgres) -> None:
    level_before, _, _ = settings(fresh_cluster)

    first = prepare("127.0.0.1", fresh_cluster.port)
    level, plugins, started = settings(fresh_cluster)
    second = prepare("127.0.0.1", fresh_cluster.port)
    conn = fresh_cluster.admin()
    try:
        conn.run("SELECT pg_create_logical_replication_slot('fs_fresh', 'wal2json')")
        conn.run("SELECT pg_drop_replication_slot('fs_fresh')")
    finally:
        conn.close()

    assert level_before == "replica"
    assert (first, second) == (0, 0)
    assert level == "logical" and (plugins == "unrestricted" or "wal2json" in plugins)
    assert settings(fresh_cluster)[2] == started  # the second run restarted nothing
