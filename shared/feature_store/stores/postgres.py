"""PostgreSQL (and CockroachDB) connections: a small thread-safe pool of pg8000 connections.

Each pooled connection prepares a statement the first time it runs it and reuses it after
(pg8000 prepared ~170 µs per key read, unprepared ~425 µs). Connections come from
cloud-sql-python-connector when an instance connection name is configured, else straight
from host and port.

Outages are always ``DependencyUnavailable`` (``DependencyTimeout`` when the server did not answer
in time), never a driver error: a refused or reset socket, a connect during shutdown or start-up
(SQLSTATE 57P03, raised by ``connect()`` as DatabaseError), an administrator or crash shutdown of
the backend (57P01, 57P02), a full server (53300). A connection that failed that way is closed,
never handed out again; an idle pooled connection is checked before it is lent (a restarted server
has closed it: the socket reads EOF), so the first request after a restart gets a fresh one.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pg8000.native
from pg8000.core import CoreConnection

from feature_store.errors import DependencyTimeout, DependencyUnavailable, FeatureStoreError
from feature_store.settings import PostgresSettings

# What the driver raises when the network or the server went away (socket.timeout is an OSError).
_DISCONNECTS = (pg8000.native.InterfaceError, OSError, EOFError, struct.error)
# SQLSTATEs after which the backend is gone or about to be: 57P01 admin shutdown, 57P02 crash
# shutdown, 57P03 cannot connect now (starting up or shutting down), 53300 too many connections,
# and class 08 (connection exceptions).
_GONE = frozenset({"57P01", "57P02", "57P03", "53300"})
# Retrying may succeed: the above, 40001 serialization failure (CockroachDB), 40P01 deadlock.
_TRANSIENT = _GONE | {"40001", "40P01", "57014"}


class Connection:
    """One open connection with its own cache of prepared statements."""

    def __init__(self, raw: CoreConnection) -> None:
        self.raw = raw
        self._prepared: dict[str, pg8000.native.PreparedStatement] = {}

    def run(self, sql: str, **params: Any) -> list[list[Any]]:
        """Run ``sql`` (``:name`` placeholders) as a prepared statement, preparing it once."""
        statement = self._prepared.get(sql)
        if statement is None:
            statement = pg8000.native.PreparedStatement(self.raw, sql)
            self._prepared[sql] = statement
        rows = statement.run(**params)
        return rows if rows is not None else []

    def columns(self, sql: str) -> list[str]:
        """Column names of a statement this connection has run."""
        return [c["name"] for c in self._prepared[sql].columns]

    def execute(self, sql: str) -> None:
        """Run unprepared SQL with no parameters (DDL, SET, BEGIN/COMMIT)."""
        self.raw.execute_simple(sql)

    def close(self) -> None:
        # Closing a broken socket may fail; the connection is gone either way.
        with contextlib.suppress(Exception):
            self.raw.close()


def connect(settings: PostgresSettings, application_name: str = "feature_store",
            generic_plans: bool = False, bulk: bool = False) -> CoreConnection:
    """Open one raw pg8000 connection as configured (Cloud SQL connector or host/port).

    ``generic_plans`` suits the point reads: their plan does not depend on the ids, and planning
    the user-state statement over every monthly partition costs more than running it. Those
    connections also turn sequential scans off: a generic plan cannot see how few ids ``= ANY($1)``
    holds, and on small partitions it chose a sequential scan testing every row against the array,
    which made 16 users cost 14.7 ms instead of 5.2 (bench/ingest.py's data set; a 1M-user source
    already had index scans everywhere and is unchanged). Where no index exists, a sequential scan
    is still used.
    ``bulk`` lifts the statement timeout for long statements (COPY, ANALYZE, bulk refresh chunks).
    Every failure to connect (refused, timed out, shutting down, rejected) raises
    DependencyUnavailable, or DependencyTimeout when the server did not answer in time.
    """
    try:
        return _connect(settings, application_name, generic_plans, bulk)
    except FeatureStoreError:
        raise
    except Exception as exc:  # the driver's and the Cloud SQL connector's errors alike: no connection
        raise _outage(exc) from exc


def _connect(settings: PostgresSettings, application_name: str, generic_plans: bool, bulk: bool) -> CoreConnection:
    if settings.instance_connection_name:
        connector = _cloud_sql_connector()
        raw: CoreConnection = connector.connect(
            settings.instance_connection_name,
            "pg8000",
            user=settings.user,
            password=_secret(settings),
            db=settings.database,
            ip_type=settings.ip_type,
        )
    else:
        ssl_context = ssl.create_default_context() if settings.ssl else None
        raw = pg8000.native.Connection(
            user=settings.user,
            host=settings.host,
            port=settings.port,
            database=settings.database,
            password=_secret(settings),
            timeout=settings.connect_timeout_s,
            ssl_context=ssl_context,
            application_name=application_name,
        )
    # pg8000's timeout bounds every socket read, not only the connect: after connecting, reads
    # wait as long as the server's statement_timeout lets a statement run (plus a margin).
    statement_ms = 0 if bulk else int(settings.statement_timeout_ms)
    usock = getattr(raw, "_usock", None)
    if usock is not None:
        usock.settimeout(None if bulk else statement_ms / 1000 + settings.connect_timeout_s)
    raw.execute_simple(f"SET statement_timeout = {statement_ms}")
    raw.execute_simple("SET TIME ZONE 'UTC'")
    if settings.dialect == "postgresql":
        # JIT compilation costs tens of milliseconds and these statements run in a few.
        raw.execute_simple("SET jit = off")
        if generic_plans:
            raw.execute_simple("SET plan_cache_mode = force_generic_plan")
            raw.execute_simple("SET enable_seqscan = off")
    return raw


def _secret(settings: PostgresSettings) -> str | None:
    return settings.password.get_secret_value() if settings.password else None


_connector_lock = threading.Lock()
_connector: Any = None


def _cloud_sql_connector() -> Any:
    global _connector
    with _connector_lock:
        if _connector is None:
            from google.cloud.sql.connector import Connector

            _connector = Connector(refresh_strategy="lazy")
        return _connector


class PostgresPool:
    """Up to ``size`` connections, opened on first use, shared by the threads of one instance."""

    def __init__(self, settings: PostgresSettings, factory: Callable[[], CoreConnection] | None = None,
                 generic_plans: bool = False, bulk: bool = False, application_name: str = "feature_store") -> None:
        self.settings = settings
        self._factory = factory or (lambda: connect(settings, application_name, generic_plans=generic_plans, bulk=bulk))
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(settings.pool_size)
        self.replaced = 0  # idle connections found dead on checkout (a server restart) and replaced

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow a live connection; an outage drops it and raises DependencyUnavailable (or DependencyTimeout)."""
        if not self._slots.acquire(timeout=self.settings.connect_timeout_s):
            raise DependencyTimeout("postgres", "connection pool exhausted")
        conn: Connection | None = None
        try:
            conn = self._checkout()
            try:
                yield conn
            except FeatureStoreError:
                raise
            except _DISCONNECTS as exc:
                conn.close()
                conn = None
                raise _outage(exc) from exc
            except pg8000.native.DatabaseError as exc:
                # The server answered. The connection stays unless the backend is going away or a
                # transaction was left open.
                if _sqlstate(exc) in _GONE or _sqlstate(exc).startswith("08") or _severity(exc) in ("FATAL", "PANIC") \
                        or conn.raw._transaction_status != b"I":
                    conn.close()
                    conn = None
                if _is_transient(exc):
                    raise _outage(exc) from exc
                raise
        finally:
            if conn is not None:
                self._idle.put(conn)
            self._slots.release()

    def _checkout(self) -> Connection:
        """An idle connection that is still open, else a new one."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return Connection(self._factory())
            if _alive(conn):
                return conn
            conn.close()
            self.replaced += 1

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _alive(conn: Connection) -> bool:
    """Whether an idle connection is still open: an idle backend sends nothing, so anything readable
    (its termination message, or EOF after a server restart) means it is gone. No round trip."""
    sock = getattr(conn.raw, "_usock", None)
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed socket: fileno() is -1
        return False
    return not readable


def _outage(exc: BaseException) -> DependencyUnavailable:
    """The error a driver or network failure becomes: a timeout, or the dependency being unavailable."""
    if isinstance(exc, socket.timeout | TimeoutError) or isinstance(exc.__cause__, socket.timeout | TimeoutError):
        return DependencyTimeout("postgres", "no answer in time")
    if isinstance(exc, pg8000.native.DatabaseError):
        state = _sqlstate(exc)
        if state == "57014":
            return DependencyTimeout("postgres", "statement timeout (57014)")
        message = exc.args[0].get("M", "") if exc.args and isinstance(exc.args[0], dict) else ""
        return DependencyUnavailable("postgres", f"{state} {message}".strip())
    return DependencyUnavailable("postgres", type(exc).__name__)


def _sqlstate(exc: pg8000.native.DatabaseError) -> str:
    args = exc.args[0] if exc.args else {}
    return str(args.get("C", "")) if isinstance(args, dict) else ""


def _severity(exc: pg8000.native.DatabaseError) -> str:
    args = exc.args[0] if exc.args else {}
    return str(args.get("S", "")) if isinstance(args, dict) else ""


def _is_transient(exc: pg8000.native.DatabaseError) -> bool:
    state = _sqlstate(exc)
    return state in _TRANSIENT or state.startswith("08") or _severity(exc) in ("FATAL", "PANIC")
