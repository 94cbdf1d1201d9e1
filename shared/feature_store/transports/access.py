"""The one place a request's credentials become its Caller, for both transports, before anything is read.

Credentials, in this order: ``X-API-Key: fsk_...`` (an API key; on Cloud Run the ``Authorization``
header then only carries the invoker's IAM token), else ``Authorization: Bearer <credential>``, where the
credential is an API key (``fsk_...``) or a Google ID token. gRPC sends the same as metadata
(``x-api-key``, ``authorization``). None of them: 401 ``unauthenticated`` with ``WWW-Authenticate``.
"""

from __future__ import annotations

from typing import Protocol

from feature_store.domain.access import Caller
from feature_store.domain.api_keys import looks_like_key
from feature_store.errors import InvalidCredentials, SettingsError, Unauthenticated
from feature_store.settings import Settings, deployed
from feature_store.transports.misconfiguration import refuse_to_start
from feature_store.wiring import Services

API_KEY_HEADER = "X-API-Key"


class Headers(Protocol):
    """Request headers (Flask's, case-insensitive) or gRPC metadata as a dict (lowercase names)."""

    def get(self, name: str, /) -> str | None: ...


def refuse_to_start_without_pepper() -> None:
    """At import of a serving entry point: a deployed instance without FS_AUTH_KEY_PEPPER does not start.

    Nor with any other invalid setting: it exits with one CRITICAL log line (transports/misconfiguration.py).
    Locally nothing is checked here (the local stack and tests set their own pepper or development mode;
    a read without either is 500 ``invalid_settings``).
    """
    if deployed():
        try:
            Settings.from_env().key_pepper()
        except SettingsError as exc:
            refuse_to_start(exc)


def authorize(svc: Services, headers: Headers) -> Caller:
    """The caller of a request with these headers (names as sent over HTTP; gRPC metadata lowercased)."""
    key = headers.get(API_KEY_HEADER) or headers.get("x-api-key")
    if key:
        return svc.access.by_key(key.strip())
    authorization = headers.get("Authorization") or headers.get("authorization")
    if not authorization:
        raise Unauthenticated("this endpoint needs credentials: an API key in X-API-Key, or "
                              "Authorization: Bearer <API key or Google ID token>")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise InvalidCredentials("the Authorization header must be 'Bearer <API key or Google ID token>'")
    if looks_like_key(credential):
        return svc.access.by_key(credential)
    return svc.access.by_token(credential)
