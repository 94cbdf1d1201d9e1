"""API key material: ``fsk_<key_id>_<secret>``, the secret stored only as HMAC-SHA256(pepper, secret).

The key id (12 lowercase letters and digits) is public: it names the key in listings and logs. The
secret is 32 random bytes, URL-safe base64; it is shown once when the key is made and never stored.
Comparison is constant time. Pure functions: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

PREFIX = "fsk"
KEY_ID_LENGTH = 12
SECRET_BYTES = 32
_ALPHABET = string.ascii_lowercase + string.digits
_KEY = re.compile(rf"^{PREFIX}_(?P<key_id>[a-z0-9]{{{KEY_ID_LENGTH}}})_(?P<secret>[A-Za-z0-9_-]{{43,128}})$")


def new_key() -> tuple[str, str, str]:
    """A fresh ``(key_id, secret, key)``; ``key`` is what the client sends."""
    key_id = "".join(secrets.choice(_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return key_id, secret, f"{PREFIX}_{key_id}_{secret}"


def parse_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    match = _KEY.match(key)
    return None if match is None else (match.group("key_id"), match.group("secret"))


def looks_like_key(text: str) -> bool:
    """Whether a bearer credential is one of our keys rather than a Google ID token."""
    return text.startswith(PREFIX + "_")


def hash_secret(pepper: bytes, secret: str) -> str:
    """What is stored for a secret: hex HMAC-SHA256 under the deployment's pepper."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(pepper: bytes, secret: str, stored: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(pepper, secret), stored)
