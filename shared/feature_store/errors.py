"""The error tree. Every error carries a stable machine ``code`` and a sentence for a human.

    FeatureStoreError
    ├── PermanentError                 give up: retrying cannot help
    │   ├── InputError (400)           the caller sent something wrong
    │   │   ├── InvalidUserId          invalid_user_id
    │   │   ├── UnknownFeature         unknown_feature
    │   │   ├── InvalidBody            invalid_body
    │   │   ├── BatchTooLarge          batch_too_large
    │   │   ├── InvalidParameter       invalid_parameter
    │   │   └── InvalidLabels          invalid_labels: names the offending label rows
    │   ├── Unauthenticated (401)      unauthenticated: no credentials (WWW-Authenticate)
    │   │   └── InvalidCredentials     invalid_credentials: unknown, malformed, revoked or expired key or token
    │   ├── Forbidden (403)            forbidden
    │   │   ├── ClientDisabled         client_disabled
    │   │   ├── FeatureOutOfScope      feature_out_of_scope: names the features
    │   │   ├── FeatureSetOutOfScope   feature_set_out_of_scope
    │   │   └── BatchOverClientLimit   batch_over_client_limit: above the client's batch_max
    │   ├── MethodNotAllowed (405)     method_not_allowed
    │   ├── BodyTooLarge (413)         body_too_large: refused before the body is read
    │   ├── UnsupportedMediaType (415) unsupported_media_type
    │   ├── NotFound (404)             not_found
    │   │   └── UnknownUser            unknown_user
    │   ├── Conflict (409)             conflict
    │   ├── PoisonMessage              poison_message: logged, counted, acknowledged
    │   ├── SettingsError (500)        invalid_settings: the instance's FS_* variables; names them, never their values
    │   ├── MigrationError (409)       migration_*
    │   └── OfflineQueryFailed         offline_query_failed: BigQuery rejected a statement
    ├── RateLimited (429)              rate_limited: over the client's rate; retry after retry_after_s (Retry-After)
    └── TransientError (503)           retry: a dependency is down or slow
        ├── DependencyUnavailable      dependency_unavailable (postgres / redis / bigquery): down or failing
        │   └── DependencyTimeout      dependency_unavailable too: it did not answer in time
        └── AuditUnavailable           audit_unavailable: reads fail closed while the audit sink is behind
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_VARIABLE = re.compile(r"\b(?:FS_[A-Z0-9_]*[A-Z0-9]|PUBSUB_EMULATOR_HOST)\b")  # what settings.py reads


class FeatureStoreError(Exception):
    """Root of every error this package raises on purpose."""

    code: str = "internal"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


class PermanentError(FeatureStoreError):
    """Retrying the same input gives the same failure."""


class InputError(PermanentError):
    code = "invalid_request"
    status = 400


class InvalidUserId(InputError):
    code = "invalid_user_id"


class UnknownFeature(InputError):
    code = "unknown_feature"


class InvalidBody(InputError):
    code = "invalid_body"


class BatchTooLarge(InputError):
    code = "batch_too_large"


class InvalidParameter(InputError):
    code = "invalid_parameter"


class InvalidLabels(InputError):
    """A label set for a training set is unusable; the message names the offending rows."""

    code = "invalid_labels"


class Unauthenticated(PermanentError):
    """The request carries no credentials: an API key (``X-API-Key``) or a Google ID token (``Authorization``)."""

    code = "unauthenticated"
    status = 401


class InvalidCredentials(Unauthenticated):
    """The credentials are malformed, unknown, revoked or expired (which one is not told to the caller)."""

    code = "invalid_credentials"


class Forbidden(PermanentError):
    """The client is known but not allowed this request."""

    code = "forbidden"
    status = 403


class ClientDisabled(Forbidden):
    code = "client_disabled"


class FeatureOutOfScope(Forbidden):
    """Features asked for explicitly that the client's scope does not include; ``features`` names them."""

    code = "feature_out_of_scope"

    def __init__(self, message: str, features: Sequence[str]) -> None:
        super().__init__(message)
        self.features = list(features)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "features": self.features}


class FeatureSetOutOfScope(Forbidden):
    code = "feature_set_out_of_scope"


class BatchOverClientLimit(Forbidden):
    """More users in one batch than this client's ``batch_max`` (the deployment's own limit is 400 batch_too_large)."""

    code = "batch_over_client_limit"


class RateLimited(FeatureStoreError):
    """The client is over its rate: retry after ``retry_after_s`` (the whole request was refused, nothing consumed)."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MethodNotAllowed(PermanentError):
    code = "method_not_allowed"
    status = 405


class BodyTooLarge(PermanentError):
    code = "body_too_large"
    status = 413


class UnsupportedMediaType(PermanentError):
    code = "unsupported_media_type"
    status = 415


class NotFound(PermanentError):
    code = "not_found"
    status = 404


class UnknownUser(NotFound):
    code = "unknown_user"


class Conflict(PermanentError):
    code = "conflict"
    status = 409


class PoisonMessage(PermanentError):
    """A change event that can never be applied: log it, count it, acknowledge it."""

    code = "poison_message"
    status = 400


class SettingsError(PermanentError):
    """One or more environment variables are missing or wrong; each problem names its variables, most as
    ``"<VARIABLE>: <what is wrong>"``.

    The server's fault, never the caller's or a message's (transports/misconfiguration.py). A problem never
    quotes a variable's value: one could hold a secret.
    """

    code = "invalid_settings"
    status = 500

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid settings: " + "; ".join(self.problems))

    @property
    def variables(self) -> list[str]:
        """The variables the problems name, in order, once each."""
        return list(dict.fromkeys(_VARIABLE.findall(" ".join(self.problems))))


class MigrationError(PermanentError):
    """The schema migrations cannot apply: the database's recorded migrations conflict with the files."""

    code = "migration_failed"
    status = 409


class OfflineQueryFailed(PermanentError):
    """BigQuery rejected a statement or a load (bad SQL or data): running it again fails the same way."""

    code = "offline_query_failed"


class TransientError(FeatureStoreError):
    """A dependency failed in a way that may pass: retry later."""

    code = "unavailable"
    status = 503
    retry_after_s = 1


class DependencyUnavailable(TransientError):
    code = "dependency_unavailable"

    def __init__(self, dependency: str, detail: str = "") -> None:
        self.dependency = dependency
        text = f"{dependency} is unavailable"
        super().__init__(f"{text}: {detail}" if detail else text)


class DependencyTimeout(DependencyUnavailable):
    """The dependency did not answer within its timeout: it may be slow, or this process may be starved."""


class AuditUnavailable(TransientError):
    """Reads are refused because their audit records cannot be kept (the sink is down past its bound)."""

    code = "audit_unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
