"""The local stack: ``python emulators/stack.py up|down|status``.

``up`` uses the PostgreSQL and Redis named by emulators/local.env (or the environment) when
they answer, and otherwise starts private ones under .local/ (Debian's binaries). It starts the
BigQuery emulator when its virtual environment exists (make install builds it), applies the
migrations, seeds a small data set, serves every function in functions/ under
functions-framework on its own 127.0.0.1 port, and prints where each part listens.
``down`` stops only what ``up`` started, by pid. State lives in .local/stack.json.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".local"
STATE = LOCAL / "stack.json"
LOGS = LOCAL / "logs"
VENV_BIN = Path(sys.executable).parent
DEV_CLIENT = "development"  # services/access.py: DEVELOPMENT_CLIENT
DEV_KEY_VAR = "FEATURE_STORE_API_KEY"  # not FS_*: settings refuse FS_ variables they do not read
FIRST_FUNCTION_PORT = 8081
PRIVATE_PG_PORT = 55432
PRIVATE_REDIS_PORT = 56379
BQ_REST_PORT, BQ_GRPC_PORT = 9050, 9060
REPLICATION_SLOT = "fs_replicate"  # the migration's subscription (docs/migration.md)
GRPC_PORT = 50051  # the featurestore.v1 gRPC service (fs-grpc), as the README promises


def log(text: str) -> None:
    print(f"[stack] {text}", flush=True)


def stack_env() -> dict[str, str]:
    """emulators/local.env overlaid with FS_* variables already set in the environment."""
    env: dict[str, str] = {}
    for line in (ROOT / "emulators" / "local.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    env.update({k: v for k, v in os.environ.items() if k.startswith("FS_") or k == "PUBSUB_EMULATOR_HOST"})
    return env


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.1)
    raise SystemExit(f"[stack] {what} did not open {host}:{port} within {seconds:.0f}s (see {LOGS})")


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    out = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True)
    return proc.pid


# --- PostgreSQL ---------------------------------------------------------------------------------


def ensure_postgres(env: dict[str, str], started: list[dict[str, object]]) -> None:
    host, port = env["FS_POSTGRES_HOST"], int(env.get("FS_POSTGRES_PORT", "5432"))
    if port_open(host, port):
        log(f"postgres: using the running server at {host}:{port}")
        return
    pg_bin = _debian_pg_bin()
    if pg_bin is None:
        raise SystemExit("[stack] no PostgreSQL answers and none is installed: apt-get install postgresql")
    data = LOCAL / "pg" / "data"
    run_dir = LOCAL / "pg" / "run"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        if as_postgres:
            shutil.chown(LOCAL / "pg", "postgres")
            for p in (data, run_dir):
                shutil.chown(p, "postgres")
        subprocess.run([*as_postgres, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
    pid = spawn("postgres", [*as_postgres, str(pg_bin / "postgres"), "-D", str(data), "-p", str(PRIVATE_PG_PORT),
                             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={run_dir}",
                             "-c", "wal_level=logical", "-c", "max_replication_slots=10"])
    started.append({"name": "postgres", "pid": pid, "endpoint": f"127.0.0.1:{PRIVATE_PG_PORT}"})
    env["FS_POSTGRES_HOST"], env["FS_POSTGRES_PORT"] = "127.0.0.1", str(PRIVATE_PG_PORT)
    if env.get("FS_MIGRATION_TARGET_HOST") == host:  # the migration's target lives on the same server
        env["FS_MIGRATION_TARGET_HOST"], env["FS_MIGRATION_TARGET_PORT"] = "127.0.0.1", str(PRIVATE_PG_PORT)
    wait_port("127.0.0.1", PRIVATE_PG_PORT, "postgres")
    log(f"postgres: started a private server at 127.0.0.1:{PRIVATE_PG_PORT} (pid {pid})")


def _debian_pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    versions = sorted(base.iterdir(), key=lambda p: p.name) if base.exists() else []
    for v in reversed(versions):
        if (v / "bin" / "postgres").exists():
            return v / "bin"
    return None


def ensure_database(env: dict[str, str]) -> None:
    """The stack's database, and the migration's target database on the same server (docs/migration.md)."""
    import pg8000.native

    admin = pg8000.native.Connection(user=env.get("FS_POSTGRES_USER", "postgres"), host=env["FS_POSTGRES_HOST"],
                                     port=int(env["FS_POSTGRES_PORT"]), database="postgres")
    try:
        names = [env["FS_POSTGRES_DATABASE"]]
        if env.get("FS_MIGRATION_TARGET_DATABASE"):
            names.append(env["FS_MIGRATION_TARGET_DATABASE"])
        for name in names:
            if not admin.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
                admin.run(f'CREATE DATABASE "{name}"')
                log(f"postgres: created database {name}")
    finally:
        admin.close()


# --- Redis --------------------------------------------------------------------------------------


def ensure_redis(env: dict[str, str], started: list[dict[str, object]]) -> None:
    url = urlparse(env["FS_REDIS_URL"])
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    if port_open(host, port):
        log(f"redis: using the running server at {host}:{port}")
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("[stack] no Redis answers and none is installed: apt-get install redis-server")
    pid = spawn("redis", [binary, "--port", str(PRIVATE_REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--maxmemory-policy", "volatile-lru"])
    started.append({"name": "redis", "pid": pid, "endpoint": f"127.0.0.1:{PRIVATE_REDIS_PORT}"})
    env["FS_REDIS_URL"] = f"redis://127.0.0.1:{PRIVATE_REDIS_PORT}/0"
    wait_port("127.0.0.1", PRIVATE_REDIS_PORT, "redis")
    log(f"redis: started a private server at 127.0.0.1:{PRIVATE_REDIS_PORT} (pid {pid})")


# --- BigQuery emulator --------------------------------------------------------------------------


def ensure_bigquery(env: dict[str, str], started: list[dict[str, object]]) -> None:
    if port_open("127.0.0.1", BQ_REST_PORT):
        log(f"bigquery emulator: already listening on 127.0.0.1:{BQ_REST_PORT}")
        return
    bq_bin = LOCAL / "venvs" / "bq" / "bin" / "bqemulator"
    if not bq_bin.exists():
        log("bigquery emulator: not installed (make install builds .local/venvs/bq); skipped")
        return
    pid = spawn("bigquery", [str(bq_bin), "start", "--rest-host", "127.0.0.1", "--rest-port", str(BQ_REST_PORT),
                             "--grpc-host", "127.0.0.1", "--grpc-port", str(BQ_GRPC_PORT),
                             "--project", env.get("FS_BIGQUERY_PROJECT", "local-project")],
                env=bigquery_env())
    started.append({"name": "bigquery", "pid": pid, "endpoint": f"http://127.0.0.1:{BQ_REST_PORT}"})
    wait_port("127.0.0.1", BQ_REST_PORT, "bigquery emulator", 90)
    log(f"bigquery emulator: http://127.0.0.1:{BQ_REST_PORT} (pid {pid})")


def bigquery_env() -> dict[str, str]:
    """A private HOME with DuckDB's spatial extension in place: the emulator cannot download it."""
    home = LOCAL / "bq" / "home"
    tmp = LOCAL / "bq" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    site = next((LOCAL / "venvs" / "bq" / "lib").glob("python3*/site-packages"))
    for ext in site.glob("duckdb_extension_spatial/extensions/*/spatial.duckdb_extension"):
        version = ext.parent.name
        target = home / ".duckdb" / "extensions" / version / "linux_amd64"
        target.mkdir(parents=True, exist_ok=True)
        if not (target / ext.name).exists():
            shutil.copy(ext, target / ext.name)
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "TMPDIR": str(tmp),
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}


# --- functions ----------------------------------------------------------------------------------


def function_dirs() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "functions").glob("*/main.py"))


def signature_type(main_py: Path, target: str) -> str:
    """``cloudevent`` when the target is decorated with functions_framework.cloud_event, else ``http``."""
    tree = ast.parse(main_py.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == target:
            for deco in node.decorator_list:
                if "cloud_event" in ast.unparse(deco):
                    return "cloudevent"
    return "http"


# The functions keep the ports the README documents (8081-8088), in this order; newer ones follow by name.
DOCUMENTED_FIRST = ("read_features", "read_features_batch", "ingest_changes", "refresh_cache", "run_etl",
                    "replicate_changes", "run_migration", "read_receipt")


def function_ports() -> dict[str, int]:
    names = sorted((d.name for d in function_dirs()),
                   key=lambda n: (DOCUMENTED_FIRST.index(n) if n in DOCUMENTED_FIRST else len(DOCUMENTED_FIRST), n))
    return {name: FIRST_FUNCTION_PORT + i for i, name in enumerate(names)}


def start_functions(env: dict[str, str], started: list[dict[str, object]]) -> None:
    child_env = {**os.environ, **env}
    for folder in function_dirs():
        name, port = folder.name, function_ports()[folder.name]
        kind = signature_type(folder / "main.py", name)
        pid = spawn(f"fn-{name}", [str(VENV_BIN / "functions-framework"), "--target", name,
                                   "--source", str(folder / "main.py"), "--signature-type", kind,
                                   "--host", "127.0.0.1", "--port", str(port)], env=child_env, cwd=ROOT)
        started.append({"name": f"function:{name}", "pid": pid, "endpoint": f"http://127.0.0.1:{port}"})
    for item in started:
        if str(item["name"]).startswith("function:"):
            port = int(str(item["endpoint"]).rsplit(":", 1)[1])
            wait_port("127.0.0.1", port, str(item["name"]))


def start_grpc(env: dict[str, str], started: list[dict[str, object]], port: int = GRPC_PORT,
               workers: int = 2) -> str:
    """fs-grpc on 127.0.0.1:``port`` (featurestore.v1, health checking, reflection); waits until it listens."""
    target = f"127.0.0.1:{port}"
    pid = spawn("grpc", [str(VENV_BIN / "python"), "-m", "feature_store.transports.grpc_server", "--address", target,
                         "--workers", str(workers)], env={**os.environ, **env}, cwd=ROOT)
    started.append({"name": "grpc", "pid": pid, "endpoint": target})
    wait_port("127.0.0.1", port, "grpc")
    return target


# --- change data capture ------------------------------------------------------------------------


def ensure_logical_decoding(env: dict[str, str]) -> None:
    """wal2json installed and allowed, wal_level = logical on the server the stack uses (postgres_setup.py)."""
    from postgres_setup import prepare

    if prepare(env["FS_POSTGRES_HOST"], int(env["FS_POSTGRES_PORT"]), env.get("FS_POSTGRES_USER", "postgres")) != 0:
        raise SystemExit("[stack] PostgreSQL is not ready for change data capture (see the lines above)")


def ensure_changelog_tables(env: dict[str, str]) -> None:
    """The BigQuery changelog tables the ingest function streams into (sql/bigquery/changelog.sql)."""
    if not port_open("127.0.0.1", BQ_REST_PORT):
        return
    from feature_store.settings import Settings
    from feature_store.stores.bigquery_changelog import BigQueryChangelog
    from feature_store.stores.dialect import DIALECTS
    from feature_store.wiring import Services

    settings = Settings.from_env(env)
    BigQueryChangelog(Services(settings).bigquery, settings.bigquery.dataset, DIALECTS[settings.postgres.dialect],
                      settings.bigquery.timeout_s).create_tables()
    log(f"bigquery: changelog tables ready in {settings.bigquery.dataset}")


def ensure_audit_table(env: dict[str, str]) -> None:
    """The audit trail's table (sql/bigquery/0004_audit_reads.sql): the read functions stream their audit rows
    into it, standing in for the production topic's BigQuery subscription. Without the BigQuery emulator the
    trail is disabled, said loudly, so reads still answer."""
    if not port_open("127.0.0.1", BQ_REST_PORT):
        env["FS_AUDIT_SINK"] = "disabled"
        log("bigquery emulator: not running, so the audit trail of reads is DISABLED (FS_AUDIT_SINK=disabled)")
        return
    from feature_store.settings import Settings
    from feature_store.stores.bigquery_offline import OfflineStore, ddl_files, ddl_statements
    from feature_store.wiring import Services

    settings = Settings.from_env(env)
    offline = OfflineStore(Services(settings).bigquery, settings.bigquery.dataset)
    for path in ddl_files():
        if "audit_reads" in path.read_text():
            for statement in ddl_statements(path.read_text(), settings.bigquery.dataset):
                offline.run(statement)
    log(f"bigquery: audit trail table {settings.bigquery.dataset}.{settings.audit.table} ready")


def start_relay(env: dict[str, str], started: list[dict[str, object]], function: str = "ingest_changes",
                slot: str | None = None) -> None:
    """A CDC relay (emulators/cdc_relay.py) pushing to ``function``; it resumes from its slot. One relay per push
    subscription of the topic: ingest_changes (FS_CDC_SLOT), and the migration's replicate_changes."""
    url = f"http://127.0.0.1:{function_ports()[function]}/"
    slot = slot or env.get("FS_CDC_SLOT", "fs_cdc")
    name = "cdc-relay" if function == "ingest_changes" else f"cdc-relay-{function}"
    pid = spawn(name, [str(VENV_BIN / "python"), str(ROOT / "emulators" / "cdc_relay.py"), "--target-url", url,
                       "--slot", slot], env={**os.environ, **env}, cwd=ROOT)
    started.append({"name": name, "pid": pid, "endpoint": f"slot {slot} -> {url}"})
    log(f"cdc relay: pushing changes to {url} from slot {slot} (pid {pid})")


# --- data ---------------------------------------------------------------------------------------


def migrate_and_seed(env: dict[str, str]) -> None:
    child_env = {**os.environ, **env}
    python = str(VENV_BIN / "python")
    subprocess.run([python, "-m", "feature_store.cli.migrate"], check=True, env=child_env)
    users = os.environ.get("STACK_SEED_USERS", "10000")
    subprocess.run([python, "-m", "feature_store.cli.generate", "seed", "--users", users, "--seed", "42"],
                   check=True, env=child_env)


def ensure_development_client(env: dict[str, str]) -> str:
    """The development client (every scope, generous limits) and a fresh key for it, printed by ``make up``.

    A key's secret is shown once and never stored, so each ``make up`` makes a new one; the stack's
    previous development keys are revoked.
    """
    child_env = {**os.environ, **env}
    keys = [str(VENV_BIN / "python"), "-m", "feature_store.cli.keys"]

    def run(*args: str) -> list[dict[str, object]]:
        out = subprocess.run([*keys, *args], check=True, env=child_env, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    if not any(c["client_id"] == DEV_CLIENT for c in run("clients", "list")):
        run("clients", "create", DEV_CLIENT, "--name", "local development (make up)", "--groups", "all",
            "--feature-sets", "all", "--batch-max", "1000", "--rate", "100000", "--burst", "1000000")
    old = [k for k in run("keys", "list", "--client", DEV_CLIENT) if k["revoked_at"] is None]
    made = run("keys", "create", DEV_CLIENT)[0]
    for key in old:
        run("keys", "revoke", str(key["key_id"]))
    return str(made["key"])


# --- commands -----------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def up() -> int:
    if STATE.exists():
        state = json.loads(STATE.read_text())
        if all(alive(int(s["pid"])) for s in state["started"]):
            log("already up")
            print_endpoints(state)
            return 0
        log("a previous stack is partly down; stopping what is left first")
        down()
    env = stack_env()
    started: list[dict[str, object]] = []
    try:
        ensure_postgres(env, started)
        ensure_redis(env, started)
        ensure_database(env)
        ensure_logical_decoding(env)
        ensure_bigquery(env, started)
        migrate_and_seed(env)
        env[DEV_KEY_VAR] = ensure_development_client(env)
        ensure_changelog_tables(env)
        ensure_audit_table(env)
        start_functions(env, started)
        start_grpc(env, started)
        if "ingest_changes" in function_ports():
            start_relay(env, started)
        if "replicate_changes" in function_ports() and env.get("FS_MIGRATION_TARGET_HOST"):
            start_relay(env, started, "replicate_changes", REPLICATION_SLOT)
    except BaseException:
        _write_state(env, started)
        down()
        raise
    state = _write_state(env, started)
    print_endpoints(state)
    return 0


def _write_state(env: dict[str, str], started: list[dict[str, object]]) -> dict[str, object]:
    LOCAL.mkdir(exist_ok=True)
    state: dict[str, object] = {"started": started, "env": env, "functions": {
        name: f"http://127.0.0.1:{port}" for name, port in function_ports().items()}}
    STATE.write_text(json.dumps(state, indent=2))
    (LOCAL / "stack.env").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    return state


def print_endpoints(state: dict[str, object]) -> None:
    env = state["env"]
    assert isinstance(env, dict)
    print(f"postgres   {env['FS_POSTGRES_HOST']}:{env['FS_POSTGRES_PORT']}/{env['FS_POSTGRES_DATABASE']}")
    print(f"redis      {env['FS_REDIS_URL']}")
    bq = "running" if port_open("127.0.0.1", BQ_REST_PORT) else "not running"
    print(f"bigquery   {env.get('FS_BIGQUERY_API_ENDPOINT', '-')} ({bq})")
    functions = state["functions"]
    assert isinstance(functions, dict)
    for name, url in functions.items():
        print(f"function   {name:<22} {url}")
    started = state.get("started", [])
    assert isinstance(started, list)
    grpc_target = next((str(s["endpoint"]) for s in started if s["name"] == "grpc"), None)
    if grpc_target:
        print(f"grpc       featurestore.v1.FeatureStore {grpc_target} (health checking, reflection)")
    if env.get(DEV_KEY_VAR):
        print(f"\ndevelopment client's API key ({DEV_KEY_VAR} in {LOCAL / 'stack.env'}): {env[DEV_KEY_VAR]}")
    if "read_features" in functions:
        url = f"{functions['read_features']}/api/v1/features/user/u000000042"
        print(f"try: curl -H \"X-API-Key: ${DEV_KEY_VAR}\" {url}")
    print(f"settings for your shell: source {LOCAL / 'stack.env'}")


def down() -> int:
    if not STATE.exists():
        log("nothing to stop")
        return 0
    state = json.loads(STATE.read_text())
    for item in reversed(state["started"]):
        stop(item)
    STATE.unlink()
    return 0


def stop(item: dict[str, object]) -> None:
    """Stop one started process (its whole session): SIGTERM, then SIGKILL after 10 s."""
    pid = int(str(item["pid"]))
    if not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)
    log(f"stopped {item['name']} (pid {pid})")


def status() -> int:
    if not STATE.exists():
        print("down")
        return 1
    state = json.loads(STATE.read_text())
    for item in state["started"]:
        print(f"{item['name']:<28} pid {item['pid']:<8} {'up' if alive(int(item['pid'])) else 'DOWN'}")
    return 0


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    commands = {"up": up, "down": down, "status": status}
    if command not in commands:
        sys.exit("usage: stack.py up|down|status")
    sys.exit(commands[command]())
