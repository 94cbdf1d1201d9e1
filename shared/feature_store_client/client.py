"""FeatureStoreClient: online vectors over REST or gRPC, and point-in-time training sets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from feature_store_client.calls import CallPolicy
from feature_store_client.errors import InvalidRequest
from feature_store_client.results import HistoricalFeatures, OnlineFeatures

if TYPE_CHECKING:
    import pandas

BATCH_MAX = 1000  # the server's default FS_SERVING_BATCH_MAX
TRAINING_LABELS_MAX = 10_000  # the server's limit of labels sent inline (run_etl's training step)
Label = dict[str, Any] | tuple[str, Any, Any]  # {"user_id", "decision_time", "label"} or (user_id, time, label)


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
                  etl_url: str | None = None, *, api_key: str | None = None, token: str | None = None,
                  **options: Any) -> FeatureStoreClient:
        """REST: ``url`` serves read_features, ``batch_url`` (default: ``url``) read_features_batch,
        ``etl_url`` run_etl (training sets; only ``get_historical_features`` needs it).

        Credentials: ``api_key`` (sent as ``X-API-Key``) and/or ``token`` (a Google ID token, sent as
        ``Authorization: Bearer``; on Cloud Run with IAM it is also the invoker's token).
        """
        from feature_store_client.rest import RestTransport

        return cls(RestTransport(url, batch_url or url, headers={**(headers or {}), **credentials(api_key, token)},
                                 etl_url=etl_url), **options)

    @classmethod
    def over_grpc(cls, target: str, secure: bool = False, metadata: Sequence[tuple[str, str]] = (), *,
                  api_key: str | None = None, token: str | None = None, **options: Any) -> FeatureStoreClient:
        """gRPC: ``target`` is ``host:port`` of the featurestore.v1 service; credentials as ``over_rest``
        (metadata ``x-api-key``, ``authorization``)."""
        from feature_store_client.grpc_transport import GrpcTransport

        extra = [(k.lower(), v) for k, v in credentials(api_key, token).items()]
        return cls(GrpcTransport(target, secure, [*metadata, *extra]), **options)

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

    def get_historical_features(self, labels: Any, version: int | None = None, *, destination: str | None = None,
                                timeout_s: float = 600.0) -> HistoricalFeatures:
        """A point-in-time training set: every feature of each label's user as it was at its decision time.

        ``labels`` is a pandas DataFrame with the columns ``user_id``, ``decision_time`` and ``label``,
        or a sequence of such dicts or ``(user_id, decision_time, label)`` tuples; times are datetimes or
        ISO 8601 text (no zone: UTC). At most 10,000 labels per call (build larger sets from a BigQuery
        table with fs-training). The set is built where the server's training path builds it (BigQuery,
        run_etl's ``training`` step) into ``destination`` (``training_...``; default: a new table),
        and its rows come back in label order. Bad labels raise InvalidRequest (``invalid_labels``)
        naming the rows. Not retried: a long build is not repeated behind the caller's back.
        """
        records = _labels(labels)
        if not records:
            raise InvalidRequest("invalid_labels", "no labels: give at least one (user_id, decision_time, label)")
        if len(records) > TRAINING_LABELS_MAX:
            raise InvalidRequest("invalid_labels", f"{len(records)} labels; at most {TRAINING_LABELS_MAX} in one call "
                                 "(build larger sets from a BigQuery table with fs-training)")
        training = getattr(self.transport, "training", None)
        if training is None:
            raise InvalidRequest("unsupported", "training sets are built over REST: FeatureStoreClient.over_rest(..., "
                                 "etl_url=...)")
        return training(records, version, destination, timeout_s)  # type: ignore[no-any-return]

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


def credentials(api_key: str | None, token: str | None) -> dict[str, str]:
    """The headers that carry an API key and a Google ID token."""
    out = {}
    if api_key:
        out["X-API-Key"] = api_key
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def _labels(labels: Any) -> list[dict[str, Any]]:
    """Label records with JSON values: ``decision_time`` as ISO 8601 text, ``label`` as str, int or float."""
    if hasattr(labels, "to_dict") and hasattr(labels, "columns"):  # a pandas DataFrame
        missing = [c for c in ("user_id", "decision_time", "label") if c not in labels.columns]
        if missing:
            raise InvalidRequest("invalid_labels", f"the labels have no column {', '.join(missing)}")
        labels = labels[["user_id", "decision_time", "label"]].to_dict("records")
    out = []
    for item in labels:
        user_id: Any
        at: Any
        label: Any
        user_id, at, label = ((item.get("user_id"), item.get("decision_time"), item.get("label"))
                              if isinstance(item, dict) else item)
        at = at.isoformat() if hasattr(at, "isoformat") else at
        label = label.item() if hasattr(label, "item") else label  # numpy scalars
        out.append({"user_id": user_id, "decision_time": at, "label": label})
    return out


def _merge(parts: list[OnlineFeatures]) -> OnlineFeatures:
    if len(parts) == 1:
        return parts[0]
    counts = {k: sum(p.counts.get(k, 0) for p in parts) for k in ("ok", "unknown_user", "unavailable")}
    degraded = next((p for p in parts if p.degraded), None)
    return replace(parts[0], as_of=min(p.as_of for p in parts), degraded=degraded is not None,
                   degraded_reason=degraded.degraded_reason if degraded else None,
                   vectors=[v for p in parts for v in p.vectors], counts=counts)
