"""API clients and their keys in PostgreSQL (sql/postgres/0006_api_clients.sql): lookups and administration.

The read path asks two questions, each one indexed statement: a key id's key and client, and a Google
principal's client. fs-keys (cli/keys.py) creates, lists, changes, rotates and revokes through the rest.
Outages are DependencyUnavailable (stores/postgres.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feature_store.domain.access import Rate, Scope, format_list, parse_list
from feature_store.errors import Conflict, InvalidParameter, NotFound
from feature_store.stores.postgres import PostgresPool

_CLIENT_COLUMNS = ("client_id, display_name, google_principal, feature_groups, feature_sets, batch_max, "
                   "rate_per_s, burst, created_at, disabled_at")
_KEY_COLUMNS = "key_id, client_id, secret_hash, created_at, expires_at, revoked_at, replaced_by"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    display_name: str
    google_principal: str | None
    groups: frozenset[str] | None
    feature_sets: frozenset[str] | None
    batch_max: int
    rate_per_s: float
    burst: int
    created_at: datetime
    disabled_at: datetime | None

    @property
    def scope(self) -> Scope:
        return Scope(self.groups, self.feature_sets, self.batch_max, Rate(self.rate_per_s, self.burst))

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "display_name": self.display_name,
                "google_principal": self.google_principal,
                "feature_groups": None if self.groups is None else sorted(self.groups),
                "feature_sets": None if self.feature_sets is None else sorted(self.feature_sets),
                "batch_max": self.batch_max, "rate_per_s": self.rate_per_s, "burst": self.burst,
                "created_at": self.created_at.isoformat(),
                "disabled_at": None if self.disabled_at is None else self.disabled_at.isoformat()}


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    client_id: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    replaced_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the hash."""
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {"key_id": self.key_id, "client_id": self.client_id, "created_at": iso(self.created_at),
                "expires_at": iso(self.expires_at), "revoked_at": iso(self.revoked_at),
                "replaced_by": self.replaced_by}


def _client(row: Sequence[Any]) -> ClientRecord:
    return ClientRecord(row[0], row[1], row[2], parse_list(row[3]), parse_list(row[4]), int(row[5]),
                        float(row[6]), int(row[7]), row[8], row[9])


def _key(row: Sequence[Any]) -> KeyRecord:
    return KeyRecord(*row[:7])


@dataclass(frozen=True, slots=True)
class ClientFields:
    """What an administrator sets on a client; ``None`` in an update leaves the field as it is."""

    display_name: str | None = None
    google_principal: str | None = None
    groups: frozenset[str] | None = None
    feature_sets: frozenset[str] | None = None
    batch_max: int | None = None
    rate_per_s: float | None = None
    burst: int | None = None


class ApiClientStore:
    """Reads and administration of api_clients and api_keys."""

    def __init__(self, pool: PostgresPool) -> None:
        self.pool = pool

    # --- the read path ------------------------------------------------------------------------------

    def key_and_client(self, key_id: str) -> tuple[KeyRecord, ClientRecord] | None:
        sql = (f"SELECT {', '.join('k.' + c.strip() for c in _KEY_COLUMNS.split(','))}, "
               f"{', '.join('c.' + c.strip() for c in _CLIENT_COLUMNS.split(','))} "
               "FROM api_keys k JOIN api_clients c ON c.client_id = k.client_id WHERE k.key_id = :k")
        with self.pool.connection() as conn:
            rows = conn.run(sql, k=key_id)
        return None if not rows else (_key(rows[0][:7]), _client(rows[0][7:]))

    def client_by_principal(self, principal: str) -> ClientRecord | None:
        with self.pool.connection() as conn:
            rows = conn.run(f"SELECT {_CLIENT_COLUMNS} FROM api_clients WHERE google_principal = :p", p=principal)
        return _client(rows[0]) if rows else None

    # --- administration (fs-keys) -------------------------------------------------------------------

    def clients(self) -> list[ClientRecord]:
        with self.pool.connection() as conn:
            return [_client(r) for r in conn.run(f"SELECT {_CLIENT_COLUMNS} FROM api_clients ORDER BY client_id")]

    def client(self, client_id: str) -> ClientRecord:
        with self.pool.connection() as conn:
            rows = conn.run(f"SELECT {_CLIENT_COLUMNS} FROM api_clients WHERE client_id = :c", c=client_id)
        if not rows:
            raise NotFound(f"no client {client_id!r}", code="unknown_client")
        return _client(rows[0])

    def create_client(self, client_id: str, f: ClientFields, exist_ok: bool = False) -> ClientRecord:
        sql = (f"INSERT INTO api_clients ({_CLIENT_COLUMNS.rsplit(', created_at', 1)[0]}) "
               "VALUES (:c, :n, :p, :g, :s, :b, CAST(:r AS NUMERIC), :u) "
               f"ON CONFLICT (client_id) DO NOTHING RETURNING {_CLIENT_COLUMNS}")
        with self.pool.connection() as conn:
            self._check_principal(conn, client_id, f.google_principal)
            rows = conn.run(sql, c=client_id, n=f.display_name or client_id, p=f.google_principal,
                            g=format_list(f.groups), s=format_list(f.feature_sets), b=f.batch_max,
                            r=str(f.rate_per_s), u=f.burst)
        if rows:
            return _client(rows[0])
        if exist_ok:
            return self.client(client_id)
        raise Conflict(f"client {client_id!r} exists already", code="client_exists")

    def update_client(self, client_id: str, f: ClientFields, all_groups: bool = False,
                      all_feature_sets: bool = False) -> ClientRecord:
        current = self.client(client_id)
        batch_max = f.batch_max if f.batch_max is not None else current.batch_max
        burst = f.burst if f.burst is not None else current.burst
        check_limits(batch_max, burst)
        groups = None if all_groups else (f.groups if f.groups is not None else current.groups)
        sets = None if all_feature_sets else (f.feature_sets if f.feature_sets is not None else current.feature_sets)
        with self.pool.connection() as conn:
            if f.google_principal is not None:
                self._check_principal(conn, client_id, f.google_principal)
            rows = conn.run(
                "UPDATE api_clients SET display_name = :n, google_principal = :p, feature_groups = :g, "
                "feature_sets = :s, batch_max = :b, rate_per_s = CAST(:r AS NUMERIC), burst = :u "
                f"WHERE client_id = :c RETURNING {_CLIENT_COLUMNS}",
                c=client_id, n=f.display_name or current.display_name,
                p=f.google_principal if f.google_principal is not None else current.google_principal,
                g=format_list(groups), s=format_list(sets), b=batch_max,
                r=str(f.rate_per_s if f.rate_per_s is not None else current.rate_per_s), u=burst)
        return _client(rows[0])

    def disable_client(self, client_id: str) -> ClientRecord:
        self.client(client_id)
        with self.pool.connection() as conn:
            rows = conn.run("UPDATE api_clients SET disabled_at = COALESCE(disabled_at, now()) WHERE client_id = :c "
                            f"RETURNING {_CLIENT_COLUMNS}", c=client_id)
        return _client(rows[0])

    def _check_principal(self, conn: Any, client_id: str, principal: str | None) -> None:
        if principal is None:
            return
        rows = conn.run("SELECT client_id FROM api_clients WHERE google_principal = :p AND client_id <> :c",
                        p=principal, c=client_id)
        if rows:
            raise Conflict(f"the Google principal {principal!r} belongs to client {rows[0][0]!r} already",
                           code="principal_taken")

    def add_key(self, key_id: str, client_id: str, secret_hash: str, expires_at: datetime | None) -> KeyRecord:
        self.client(client_id)
        with self.pool.connection() as conn:
            rows = conn.run(f"INSERT INTO api_keys (key_id, client_id, secret_hash, expires_at) "
                            f"VALUES (:k, :c, :h, :e) RETURNING {_KEY_COLUMNS}",
                            k=key_id, c=client_id, h=secret_hash, e=expires_at)
        return _key(rows[0])

    def keys(self, client_id: str | None = None) -> list[KeyRecord]:
        with self.pool.connection() as conn:
            rows = conn.run(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE CAST(:c AS VARCHAR) IS NULL "
                            "OR client_id = :c ORDER BY client_id, created_at, key_id", c=client_id)
        return [_key(r) for r in rows]

    def key(self, key_id: str) -> KeyRecord:
        with self.pool.connection() as conn:
            rows = conn.run(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = :k", k=key_id)
        if not rows:
            raise NotFound(f"no key {key_id!r}", code="unknown_key")
        return _key(rows[0])

    def rotate(self, old_key_id: str, new_key_id: str, secret_hash: str, grace_s: int) -> tuple[KeyRecord, KeyRecord]:
        """A new key for the old one's client; the old one expires ``grace_s`` from now (or sooner if it did)."""
        old = self.key(old_key_id)
        if old.revoked_at is not None:
            raise Conflict(f"key {old_key_id} is revoked; create a new key instead", code="key_revoked")
        with self.pool.connection() as conn:
            conn.execute("BEGIN")
            try:
                new = conn.run(f"INSERT INTO api_keys (key_id, client_id, secret_hash) VALUES (:k, :c, :h) "
                               f"RETURNING {_KEY_COLUMNS}", k=new_key_id, c=old.client_id, h=secret_hash)
                updated = conn.run(
                    "UPDATE api_keys SET replaced_by = :n, expires_at = CASE WHEN expires_at IS NOT NULL AND "
                    "expires_at < now() + CAST(:g AS INTEGER) * INTERVAL '1 second' THEN expires_at "
                    "ELSE now() + CAST(:g AS INTEGER) * INTERVAL '1 second' END "
                    f"WHERE key_id = :k RETURNING {_KEY_COLUMNS}",
                    n=new_key_id, g=grace_s, k=old_key_id)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return _key(updated[0]), _key(new[0])

    def revoke(self, key_id: str) -> KeyRecord:
        self.key(key_id)
        with self.pool.connection() as conn:
            rows = conn.run("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = :k "
                            f"RETURNING {_KEY_COLUMNS}", k=key_id)
        return _key(rows[0])


def check_limits(batch_max: int, burst: int) -> None:
    """A client's batch must fit its burst, or the limiter could never admit it."""
    if burst < batch_max:
        raise InvalidParameter(f"burst {burst} is below batch_max {batch_max}: a full batch could never be admitted",
                               code="burst_below_batch_max")
