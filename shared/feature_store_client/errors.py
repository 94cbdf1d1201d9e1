"""The client's errors: the server's stable codes as exceptions, and what the client itself gave up on.

    FeatureStoreClientError          root: catch this to catch everything the client raises
    ├── ServerError                  the server answered an error: ``code`` (its stable machine code),
    │   │                            ``message``, ``http_status`` / ``grpc_code``, ``retry_after_s``
    │   ├── InvalidRequest           400 / INVALID_ARGUMENT: invalid_user_id, unknown_feature, batch_too_large, ...
    │   ├── Unauthenticated          401 / UNAUTHENTICATED
    │   ├── PermissionDenied         403 / PERMISSION_DENIED
    │   ├── NotFound                 404 / NOT_FOUND: unknown_user, unknown_feature_set
    │   ├── RateLimited              429 / RESOURCE_EXHAUSTED (a 4xx: not retried)
    │   └── Unavailable              503 / UNAVAILABLE (and 502, 504, a refused connection): retried
    └── DeadlineExceeded             the call's deadline passed (code ``deadline_exceeded``)

Only ``Unavailable`` is retried; every 4xx is final, 401/403/429 included. A 429 is not retried by
the client: the limit is the caller's budget, and spending it on retries the caller did not ask for
would hide the overload; ``retry_after_s`` says when the server takes the request again.
A 403 ``feature_out_of_scope`` names the refused features in ``features``.
"""

from __future__ import annotations


class FeatureStoreClientError(Exception):
    """Root of every error the client raises."""

    code = "client_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ServerError(FeatureStoreClientError):
    """The server answered with an error."""

    def __init__(self, code: str, message: str, *, http_status: int | None = None, grpc_code: str | None = None,
                 retry_after_s: float | None = None, features: list[str] | None = None) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.grpc_code = grpc_code
        self.retry_after_s = retry_after_s
        self.features = features or []

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidRequest(ServerError):
    """The request was wrong (400): retrying it cannot help."""


class Unauthenticated(ServerError):
    """The server did not know who called (401): ``unauthenticated`` (no credentials) or ``invalid_credentials``."""


class PermissionDenied(ServerError):
    """The caller may not read this (403): ``client_disabled``, ``feature_out_of_scope`` (see ``features``),
    ``feature_set_out_of_scope``, ``batch_over_client_limit``."""


class NotFound(ServerError):
    """No such user or feature set (404)."""


class RateLimited(ServerError):
    """Over the caller's rate (429); ``retry_after_s`` says when the server takes it again."""


class Unavailable(ServerError):
    """A dependency or the server itself is unavailable (503): retried with jittered backoff."""


class DeadlineExceeded(FeatureStoreClientError):
    """The call's deadline passed before an answer came."""

    code = "deadline_exceeded"


BY_HTTP_STATUS: dict[int, type[ServerError]] = {
    400: InvalidRequest, 401: Unauthenticated, 403: PermissionDenied, 404: NotFound, 429: RateLimited,
    502: Unavailable, 503: Unavailable, 504: Unavailable,
}
BY_GRPC_CODE: dict[str, type[ServerError]] = {
    "INVALID_ARGUMENT": InvalidRequest, "UNAUTHENTICATED": Unauthenticated, "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": NotFound, "RESOURCE_EXHAUSTED": RateLimited, "UNAVAILABLE": Unavailable,
}
