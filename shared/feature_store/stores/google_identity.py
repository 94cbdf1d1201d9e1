"""Google ID tokens: verified with google-auth against Google's certificates, or read when the platform verified them.

On Cloud Run and Cloud Functions with IAM, the platform has already verified the ``Authorization``
token of every request it let through; ``platform_verified`` then reads its claims without checking
the signature again. Anywhere else (locally, behind a proxy that does not verify) the signature,
expiry, audience and issuer are checked here, the certificates fetched once and kept for their
lifetime (``cert_cache_s``), not per request.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from google.auth import exceptions as google_exceptions
from google.auth import jwt
from google.auth.transport import Request, Response
from google.oauth2 import id_token

from feature_store.errors import DependencyUnavailable, InvalidCredentials


class CachingRequest(Request):
    """A google-auth transport that keeps successful GETs (the certificate documents) for ``ttl_s``."""

    def __init__(self, inner: Request, ttl_s: float = 300.0) -> None:
        self._inner = inner
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Response]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: Any = None, **kwargs: Any) -> Response:
        if method == "GET" and body is None:
            with self._lock:
                hit = self._cache.get(url)
            if hit is not None and time.monotonic() - hit[0] < self._ttl_s:
                return hit[1]
        response = self._inner(url, method=method, body=body, headers=headers, timeout=timeout or 5, **kwargs)
        if method == "GET" and body is None and response.status == 200:
            with self._lock:
                self._cache[url] = (time.monotonic(), response)
        return response  # type: ignore[no-any-return]


def default_transport() -> Request:
    """google-auth's urllib3 transport (urllib3 ships with google-auth's dependencies)."""
    import urllib3
    from google.auth.transport.urllib3 import Request as Urllib3Request

    return Urllib3Request(urllib3.PoolManager())  # type: ignore[no-untyped-call]


class GoogleTokenVerifier:
    """The claims of a Google ID token minted for ``audience``, or InvalidCredentials."""

    def __init__(self, audience: str | None, certs_url: str, issuers: tuple[str, ...],
                 platform_verified: bool, transport: Request | None = None) -> None:
        self.audience = audience
        self.certs_url = certs_url
        self.issuers = issuers
        self.platform_verified = platform_verified
        self._request = CachingRequest(transport or default_transport())

    def claims(self, token: str) -> dict[str, Any]:
        if self.platform_verified:
            try:
                return dict(jwt.decode(token, verify=False))  # type: ignore[no-untyped-call]
            except (ValueError, google_exceptions.GoogleAuthError):
                raise InvalidCredentials("the bearer token is not a JWT") from None
        if self.audience is None:
            raise InvalidCredentials("Google identities are not accepted here (no FS_AUTH_GOOGLE_AUDIENCE is set); "
                                     "send an API key")
        try:
            claims = id_token.verify_token(token, self._request, audience=self.audience, certs_url=self.certs_url)
        except google_exceptions.TransportError as exc:
            raise DependencyUnavailable("google_certs", str(exc)[:200]) from None
        except (ValueError, google_exceptions.GoogleAuthError) as exc:
            raise InvalidCredentials(f"the Google ID token is not valid: {_reason(exc)}") from None
        if claims.get("iss") not in self.issuers:
            raise InvalidCredentials("the Google ID token has an unexpected issuer")
        return dict(claims)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for word, reason in (("expired", "expired"), ("Token used too late", "expired"), ("audience", "wrong audience"),
                         ("signature", "bad signature"), ("Could not verify", "bad signature")):
        if word in text:
            return reason
    return "malformed or not signed by Google"


def principal_of(claims: dict[str, Any]) -> str | None:
    """The identity a client record names: the verified email, else the subject."""
    email = claims.get("email")
    if isinstance(email, str) and claims.get("email_verified", True) is not False:
        return email
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None
