"""FeatureStoreClient: online vectors over REST or gRPC, and point-in-time training sets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from feature_store_client.calls import CallPolicy
from feature_store_client.errors import InvalidRequest
from feature_store_client.results import OnlineFeatures

if TYPE_CHECKING:
    import pandas

BATCH_MAX = 1000  # the server's default FS_SERVING_BATCH_MAX


class Transport(Protocol):
    def read_one(self, user_id: str, features: Sequence[str] | None, version: int | None, feature_set: str | None,
                 timeout_s: float) -> OnlineFeatures: ...

    def read_batch(self, user_ids: Sequence[str], features: Sequence[str] | None, version: int | None,
                   feature_set: str | None, timeout_s: float) -> OnlineFeatures: ...


class FeatureStoreClient:
    """Reads feature vectors; build it with ``over_rest`` or ``over_grpc``.

    ``timeout_s`` is each call's deadline (all attempts and waits included); ``attempts``,
    ``backoff_s``, ``backoff_max_s`` and ``hedge_after_s`` are the retry and hedging policy
    (feature_store_client/calls.py); ``batch_max`` the server's batch limit, above which a read is
    split into several requests.
    """

    def __init__(self, transport: Transport, *, timeout_s: float = 2.0, attempts: int = 3, backoff_s: float = 0.05,
                 backoff_max_s: float = 1.0, hedge_after_s: float | None = None, batch_max: int = BATCH_MAX) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.batch_max = batch_max
        self.policy = CallPolicy(attempts=attempts, backoff_s=backoff_s, backoff_max_s=backoff_max_s,
                                 hedge_after_s=hedge_after_s)

    @classmethod
    def over_rest(cls, url: str, batch_url: str | None = None, headers: dict[str, str] | None = None,
                  **options: Any) -> FeatureStoreClient:
        """REST: ``url`` serves read_features, ``batch_url`` (default: ``url``) read_features_batch."""
        from feature_store_client.rest import RestTransport

        return cls(RestTransport(url, batch_url or url, headers=headers), **options)

    @classmethod
    def over_grpc(cls, target: str, secure: bool = False, metadata: Sequence[tuple[str, str]] = (),
                  **options: Any) -> FeatureStoreClient:
        """gRPC: ``target`` is ``host:port`` of the featurestore.v1 service."""
        from feature_store_client.grpc_transport import GrpcTransport

        return cls(GrpcTransport(target, secure, metadata), **options)

    def get_online_features(self, user_ids: str | Sequence[str], features: Sequence[str] | None = None,
                            version: int | None = None, *, feature_set: str | None = None,
                            timeout_s: float | None = None) -> OnlineFeatures:
        """The vectors of ``user_ids`` (one id: the single read; a list: batch reads, split at ``batch_max``).

        A single id that is not a user raises NotFound (``unknown_user``); in a list it is a vector whose
        status is ``unknown_user``. Every error of the server is raised with its stable code.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if isinstance(user_ids, str):
            one = user_ids
            return self.policy.run(lambda t: self.transport.read_one(one, features, version, feature_set, t), timeout)
        ids = list(user_ids)
        if not ids:
            raise InvalidRequest("invalid_body", "user_ids is empty: ask for at least one user")
        deadline = self.policy.clock() + timeout
        parts: list[OnlineFeatures] = []
        for start in range(0, len(ids), self.batch_max):
            chunk = ids[start:start + self.batch_max]
            pinned = version if version is not None or not parts else parts[0].version  # one version for all parts
            parts.append(self.policy.run(
                lambda t, c=chunk, v=pinned: self.transport.read_batch(c, features, v, feature_set, t),  # type: ignore[misc]
                deadline - self.policy.clock()))
        return _merge(parts)

    def get_online_dataframe(self, user_ids: Sequence[str], features: Sequence[str] | None = None,
                             version: int | None = None, **options: Any) -> pandas.DataFrame:
        """``get_online_features(...).to_dataframe()``: one row per user id (needs pandas)."""
        return self.get_online_features(list(user_ids), features, version, **options).to_dataframe()

    def close(self) -> None:
        self.policy.close()
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> FeatureStoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _merge(parts: list[OnlineFeatures]) -> OnlineFeatures:
    if len(parts) == 1:
        return parts[0]
    counts = {k: sum(p.counts.get(k, 0) for p in parts) for k in ("ok", "unknown_user", "unavailable")}
    degraded = next((p for p in parts if p.degraded), None)
    return replace(parts[0], as_of=min(p.as_of for p in parts), degraded=degraded is not None,
                   degraded_reason=degraded.degraded_reason if degraded else None,
                   vectors=[v for p in parts for v in p.vectors], counts=counts)
