"""Google ID tokens as credentials: verified with google-auth against certificates served locally.

Tokens are signed with an RSA key made here; its certificate is served by a local HTTP server as
Google serves its own (``{key id: PEM certificate}``), at the URL FS_AUTH_GOOGLE_CERTS_URL names.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from conftest import function_client

AUDIENCE = "https://read-features.example.run.app"
ISSUER = "https://accounts.google.com"
KID = "test-kid-1"


def _key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-certs")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private, cert.public_bytes(serialization.Encoding.PEM)


SIGNING, CERT = _key_pair()
OTHER, _ = _key_pair()


@pytest.fixture(scope="module")
def certs_url() -> Iterator[tuple[str, list[str]]]:
    """The URL of the certificate document, and the paths fetched from it (to count fetches)."""
    fetched: list[str] = []
    document = json.dumps({KID: CERT.decode()}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs", fetched
    server.shutdown()


def token(email: str, *, audience: str = AUDIENCE, expires_in: int = 3600, key: bytes = SIGNING) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": audience, "sub": "1234567890", "email": email, "email_verified": True,
               "iat": now - 60 if expires_in > 0 else now - 7200, "exp": now + expires_in}
    return jwt.encode(crypt.RSASigner.from_string(key, key_id=KID), payload).decode()  # type: ignore[no-untyped-call]


@pytest.fixture
def google_env(env: dict[str, str], certs_url: tuple[str, list[str]],
               use_env: Callable[[dict[str, str]], None]) -> Callable[..., None]:
    def apply(**extra: str) -> None:
        use_env({**env, "FS_AUTH_GOOGLE_AUDIENCE": AUDIENCE, "FS_AUTH_GOOGLE_CERTS_URL": certs_url[0], **extra})

    return apply


@pytest.fixture
def principal(google_env: Callable[..., None]) -> str:
    """A client whose Google principal is a service account's email."""
    from feature_store.cli import keys

    google_env()
    email = f"decider-{time.monotonic_ns() % 10**9}@lender.iam.gserviceaccount.com"
    assert keys.main(["clients", "create", email.split("@")[0], "--groups", "all", "--feature-sets", "all",
                      "--google-principal", email]) == 0
    return email


def read(bearer: str) -> Any:
    client = function_client("read_features")
    client.environ_base.pop("HTTP_X_API_KEY")
    return client.get("/api/v1/features/user/u000000001", headers={"Authorization": f"Bearer {bearer}"})


def refused(response: Any) -> str:
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"]["code"] == "invalid_credentials"
    return str(response.get_json()["error"]["message"])


def test_a_valid_token_of_a_known_principal_reads_and_certs_are_fetched_once(
        principal: str, certs_url: tuple[str, list[str]]) -> None:
    before = len(certs_url[1])

    answers = [read(token(principal)).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert len(certs_url[1]) - before == 1  # a new instance fetches them once, then keeps them


def test_an_expired_token_is_401(principal: str) -> None:
    assert "expired" in refused(read(token(principal, expires_in=-600)))


def test_a_token_for_another_audience_is_401(principal: str) -> None:
    assert "audience" in refused(read(token(principal, audience="https://someone-else.example")))


def test_a_token_with_a_bad_signature_is_401(principal: str) -> None:
    assert "signature" in refused(read(token(principal, key=OTHER)))


def test_an_unknown_principal_is_401(principal: str) -> None:
    assert "not a client" in refused(read(token("stranger@elsewhere.iam.gserviceaccount.com")))


def test_garbage_in_the_bearer_is_401(principal: str) -> None:
    refused(read("not-a-jwt"))


def test_platform_verified_tokens_are_read_without_checking_the_signature_again(
        principal: str, google_env: Callable[..., None]) -> None:
    google_env(FS_AUTH_GOOGLE_PLATFORM_VERIFIED="true")

    assert read(token(principal, key=OTHER)).status_code == 200  # Cloud Run checked it; we only read the claims
    assert "not a client" in refused(read(token("stranger@elsewhere.iam.gserviceaccount.com", key=OTHER)))


def test_without_an_audience_google_identities_are_refused(env: dict[str, str],
                                                           use_env: Callable[[dict[str, str]], None]) -> None:
    use_env(env)
    assert "API key" in refused(read(token("anyone@example.com")))
