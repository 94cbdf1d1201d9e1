"""Make a PostgreSQL server ready for change data capture: ``python emulators/postgres_setup.py``.

What the CDC relay and its tests need, each step skipped when already right (so a second run
costs one connection and no restart):

1. the wal2json output plugin installed for the server's major version (Debian's
   ``postgresql-<major>-wal2json``, apt-get; without it the relay falls back to test_decoding);
2. wal2json allowed where the server restricts output plugins (``output_plugin_libraries``:
   ALTER SYSTEM, then a reload);
3. ``wal_level = logical`` (ALTER SYSTEM, then a restart of the Debian cluster on that port);
4. ``shared_buffers`` as Cloud SQL sets it for the production tier (terraform/modules/cloudsql: a third of
   the instance's memory, Cloud SQL's documented default), at most a quarter of this machine's memory, and
   never lowered (ALTER SYSTEM; the same restart). PostgreSQL's own default, 128 MB, held 2% of the
   benchmark's 1M-user source: every miss read its pages from the operating system's cache, 3-4 ms a
   statement instead of 0.4, a figure no production source shows.

The server is the one FS_POSTGRES_HOST/PORT name (else emulators/local.env's). Restarts and
package installs are done only for a Debian cluster of this machine (pg_lsclusters lists it);
for any other server the script says what is missing and exits 1. `make test` and `make up`
run it (the `services` target and emulators/stack.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pg8000.native
from stack import stack_env

PLUGINS_WANTED = ("pgoutput", "test_decoding", "wal2json")
CLOUDSQL_VARIABLES = Path(__file__).resolve().parent.parent / "terraform" / "modules" / "cloudsql" / "variables.tf"


def log(text: str) -> None:
    print(f"[postgres-setup] {text}", flush=True)


def admin(host: str, port: int, user: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(user=user, host=host, port=port, database="postgres", timeout=10)


def debian_cluster(port: int) -> tuple[str, str] | None:
    """(version, name) of the Debian cluster of this machine listening on ``port``, if any."""
    if shutil.which("pg_lsclusters") is None:
        return None
    out = subprocess.run(["pg_lsclusters", "--json"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None
    for cluster in json.loads(out.stdout or "[]"):
        if str(cluster.get("port")) == str(port):
            return str(cluster["version"]), str(cluster["cluster"])
    return None


def ensure_wal2json(major: str) -> bool:
    """Whether wal2json is installed for ``major``; installs Debian's package when it is not."""
    library = Path(f"/usr/lib/postgresql/{major}/lib/wal2json.so")
    if library.exists():
        return True
    package = f"postgresql-{major}-wal2json"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(f"wal2json is not installed and this user cannot install it: apt-get install {package} "
            "(the relay falls back to test_decoding meanwhile)")
        return False
    log(f"installing {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package]
    if subprocess.run(install, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(install, env=env, check=False, stdout=subprocess.DEVNULL)
    if not library.exists():
        log(f"could not install {package}; the relay falls back to test_decoding")
    return library.exists()


def allow_wal2json(conn: pg8000.native.Connection) -> None:
    """Add wal2json to output_plugin_libraries where the server has that restriction."""
    found = conn.run("SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'")
    if not found:
        return
    allowed = [p.strip() for p in str(found[0][0]).split(",") if p.strip()]
    if "wal2json" in allowed:
        return
    wanted = allowed + [p for p in PLUGINS_WANTED if p not in allowed]
    log(f"allowing output plugins {', '.join(wanted)} (output_plugin_libraries, reload)")
    conn.run("ALTER SYSTEM SET output_plugin_libraries = " + ", ".join(f"'{p}'" for p in wanted))
    conn.run("SELECT pg_reload_conf()")


def production_memory_mb(variables: Path = CLOUDSQL_VARIABLES) -> int:
    """The memory of the Cloud SQL tier Terraform deploys by default (``db-custom-<cpus>-<memory MB>``)."""
    found = re.search(r'variable "tier".*?default\s*=\s*"db-custom-\d+-(\d+)"', variables.read_text(), re.S)
    if found is None:
        raise SystemExit(f"no db-custom tier default in {variables}")
    return int(found.group(1))


def wanted_shared_buffers_mb(machine_mb: int, production_mb: int) -> int:
    """Cloud SQL's default for the production tier (a third of its memory), at most a quarter of this machine's."""
    return min(production_mb // 3, machine_mb // 4)


def machine_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20


def shared_buffers_change(conn: pg8000.native.Connection) -> str | None:
    """ALTER SYSTEM for shared_buffers when the server has less than wanted (takes effect at the restart), else None."""
    current_mb = int(conn.run("SELECT CAST(setting AS bigint) * 8 / 1024 FROM pg_settings "
                              "WHERE name = 'shared_buffers'")[0][0])
    wanted = wanted_shared_buffers_mb(machine_memory_mb(), production_memory_mb())
    if current_mb >= wanted:
        return None
    conn.run(f"ALTER SYSTEM SET shared_buffers = '{wanted}MB'")
    return f"shared_buffers {current_mb} MB -> {wanted} MB"


def wait_ready(host: str, port: int, user: str, seconds: float = 60) -> pg8000.native.Connection:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return admin(host, port, user)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def prepare(host: str, port: int, user: str = "postgres") -> int:
    """Steps 1-3 on the server at host:port; 0 when it is ready for CDC, 1 when it is not."""
    try:
        conn = admin(host, port, user)
    except Exception as exc:
        log(f"no PostgreSQL answers at {host}:{port} ({type(exc).__name__}); start it "
            "(.ci/run starts the machine's cluster; `make up` starts a private one when none runs)")
        return 1
    cluster = debian_cluster(port) if host in ("127.0.0.1", "localhost") else None
    try:
        major = str(conn.run("SELECT current_setting('server_version_num')")[0][0])[:-4]
        if cluster is not None or Path(f"/usr/lib/postgresql/{major}/bin/postgres").exists():
            ensure_wal2json(major)
        allow_wal2json(conn)
        level = conn.run("SELECT current_setting('wal_level')")[0][0]
        if cluster is None:
            if level == "logical":
                return 0
            log(f"{host}:{port} runs with wal_level = {level}; CDC needs ALTER SYSTEM SET wal_level = logical "
                "and a restart, which this script does only for a Debian cluster of this machine")
            return 1
        changes = [] if level == "logical" else ["wal_level = logical"]
        if level != "logical":
            conn.run("ALTER SYSTEM SET wal_level = logical")
        buffers = shared_buffers_change(conn)
        if buffers is not None:
            changes.append(buffers)
        if not changes:
            return 0
        log(f"cluster {cluster[0]}/{cluster[1]}: {'; '.join(changes)} (ALTER SYSTEM, restart)")
    finally:
        conn.close()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster[0], cluster[1], "restart"], check=True)
    conn = wait_ready(host, port, user)
    try:
        level = conn.run("SELECT current_setting('wal_level')")[0][0]
    finally:
        conn.close()
    if level != "logical":
        log(f"wal_level is still {level} after the restart")
        return 1
    return 0


def main() -> int:
    env = stack_env()
    return prepare(env["FS_POSTGRES_HOST"], int(env.get("FS_POSTGRES_PORT", "5432")),
                   env.get("FS_POSTGRES_USER", "postgres"))


if __name__ == "__main__":
    sys.exit(main())
