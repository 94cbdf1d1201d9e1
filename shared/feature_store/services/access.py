"""Resolving credentials to a Caller: API keys and Google identities, with an in-process last-good cache.

A resolved key (its record and its client's) and a resolved Google principal are kept ``cache_s``
(10 s by default), so a cached read costs no PostgreSQL round trip; revoking a key, disabling a client
or changing a scope takes effect within that time on every instance. Expiry is checked against the
clock on every request, so an expired key stops at its instant. When PostgreSQL cannot be read, an
entry past its time keeps serving (the last good answer): an outage of the source never fails reads of
a client this instance has resolved before; a credential it has never seen is then 503
``dependency_unavailable``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from feature_store.domain.access import Caller
from feature_store.domain.api_keys import parse_key, secret_matches
from feature_store.errors import ClientDisabled, DependencyUnavailable, InvalidCredentials
from feature_store.logs import get_logger
from feature_store.services.blocking import may_block
from feature_store.stores.api_clients import ClientRecord, KeyRecord

log = get_logger(__name__)
DEVELOPMENT_CLIENT = "development"  # the client `make up` ensures (emulators/stack.py)
V = TypeVar("V")


class ClientLookup(Protocol):
    def key_and_client(self, key_id: str) -> tuple[KeyRecord, ClientRecord] | None: ...

    def client_by_principal(self, principal: str) -> ClientRecord | None: ...


class TokenVerifier(Protocol):
    def claims(self, token: str) -> dict[str, object]: ...


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    at: float


class LastGoodCache(Generic[V]):
    """``get(key, load)``: a value younger than ``ttl_s``, else ``load()``; the last good one if load is unavailable."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_entries, self._clock = ttl_s, max_entries, clock
        self._entries: dict[str, _Entry[V]] = {}
        self._lock = threading.Lock()
        self.stale_served = 0

    def get(self, key: str, load: Callable[[], V]) -> V:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.at < self.ttl_s:
            return entry.value
        may_block()  # on the event loop: the request goes to the serving pool, which loads it
        try:
            value = load()
        except DependencyUnavailable:
            if entry is None:
                raise
            self.stale_served += 1
            log.warning("credentials resolved from the last good copy; the source is unavailable",
                        extra={"fields": {"event": "auth_cache_stale", "age_s": round(now - entry.at, 1)}})
            return entry.value
        with self._lock:
            if len(self._entries) >= self.max_entries and key not in self._entries:
                self._entries.clear()  # bounded: invented keys cannot grow it forever
            self._entries[key] = _Entry(value, now)
        return value


class AccessControl:
    """Turns an API key or a Google ID token into the Caller it stands for, or a 401/403 error."""

    def __init__(self, store: ClientLookup, pepper: bytes, verifier: TokenVerifier | None,
                 cache_s: float = 10.0, cache_entries: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._pepper = pepper
        self._verifier = verifier
        self._keys: LastGoodCache[tuple[KeyRecord, ClientRecord] | None] = LastGoodCache(cache_s, cache_entries)
        self._principals: LastGoodCache[ClientRecord | None] = LastGoodCache(cache_s, cache_entries)
        self._tokens: LastGoodCache[tuple[str, float]] = LastGoodCache(cache_s, cache_entries)
        self._clock = clock

    def by_key(self, key: str) -> Caller:
        parsed = parse_key(key)
        if parsed is None:
            raise InvalidCredentials("the API key is malformed; keys look like fsk_<key id>_<secret>")
        key_id, secret = parsed
        found = self._keys.get(key_id, lambda: self._store.key_and_client(key_id))
        if found is None or not secret_matches(self._pepper, secret, found[0].secret_hash):
            raise InvalidCredentials(f"unknown API key {key_id}")
        record, client = found
        now = datetime.fromtimestamp(self._clock(), UTC)
        if record.revoked_at is not None and record.revoked_at <= now:
            raise InvalidCredentials(f"API key {key_id} was revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise InvalidCredentials(f"API key {key_id} expired at {record.expires_at.isoformat()}")
        return _caller(client, "api_key", key_id)

    def by_token(self, token: str) -> Caller:
        if self._verifier is None:
            raise InvalidCredentials("Google identities are not accepted here; send an API key")
        digest = hashlib.sha256(token.encode()).hexdigest()
        verifier = self._verifier
        # A verified token is remembered for the cache time; its expiry is checked on every request.
        principal, expires = self._tokens.get(digest, lambda: _principal(verifier.claims(token)))
        if expires <= self._clock():
            raise InvalidCredentials("the Google ID token is not valid: expired")
        client = self._principals.get(principal, lambda: self._store.client_by_principal(principal))
        if client is None:
            raise InvalidCredentials(f"the Google identity {principal} is not a client of this feature store")
        return _caller(client, "google", principal)


def _principal(claims: dict[str, object]) -> tuple[str, float]:
    """The principal a token names and its expiry (epoch seconds; no ``exp`` claim: not cached past now + 1 h)."""
    from feature_store.stores.google_identity import principal_of

    principal = principal_of(dict(claims))
    if principal is None:
        raise InvalidCredentials("the Google ID token names no email or subject")
    exp = claims.get("exp")
    return principal, float(exp) if isinstance(exp, int | float) else time.time() + 3600


def _caller(client: ClientRecord, kind: str, principal: str) -> Caller:
    if client.disabled_at is not None:
        raise ClientDisabled(f"client {client.client_id} is disabled")
    return Caller(client.client_id, "development" if client.client_id == DEVELOPMENT_CLIENT else kind,  # type: ignore[arg-type]
                  principal, client.scope)
