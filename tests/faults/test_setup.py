"""`make services` on a fresh server: emulators/postgres_setup.py turns a cluster with Debian's defaults
(wal_level = replica; output plugins restricted where the server has output_plugin_libraries) into one
the relay can use with wal2json and with shared_buffers as Cloud SQL sizes them for the production tier,
and a second run changes nothing (no restart)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from .servers import ROOT, PrivatePostgres

pytestmark = pytest.mark.faults

sys.path.insert(0, str(ROOT / "emulators"))
from postgres_setup import machine_memory_mb, prepare, production_memory_mb, wanted_shared_buffers_mb  # noqa: E402


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
        buffers_mb = int(conn.run("SELECT CAST(setting AS bigint) * 8 / 1024 FROM pg_settings "
                                  "WHERE name = 'shared_buffers'")[0][0])
        conn.run("SELECT pg_create_logical_replication_slot('fs_fresh', 'wal2json')")
        conn.run("SELECT pg_drop_replication_slot('fs_fresh')")
    finally:
        conn.close()

    assert level_before == "replica"
    assert (first, second) == (0, 0)
    assert level == "logical" and (plugins == "unrestricted" or "wal2json" in plugins)
    assert settings(fresh_cluster)[2] == started  # the second run restarted nothing
    assert buffers_mb == wanted_shared_buffers_mb(machine_memory_mb(), production_memory_mb()) > 128


def test_shared_buffers_follow_the_production_tier() -> None:
    assert production_memory_mb() == 16384  # terraform/modules/cloudsql: db-custom-4-16384
    assert wanted_shared_buffers_mb(24 * 1024, 16384) == 5461  # a third of the instance, as Cloud SQL sets it
    assert wanted_shared_buffers_mb(8 * 1024, 16384) == 2048  # a small machine keeps three quarters for itself
