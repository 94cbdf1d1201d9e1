"""The gRPC transport: featurestore.v1 over one HTTP/2 channel (needs the ``grpc`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from feature_store_client.errors import BY_GRPC_CODE, DeadlineExceeded, ServerError
from feature_store_client.results import FeatureVector, OnlineFeatures

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATUS = {1: "ok", 2: "unknown_user", 3: "unavailable"}


def _time(ts: Any) -> datetime:
    return EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _vector(v: Any, names: list[tuple[str, str]]) -> FeatureVector:
    status = STATUS.get(v.status, "unspecified")
    if status != "ok":
        return FeatureVector(v.user_id, status)
    features: dict[str, dict[str, Any]] = {}
    for (group, name), value in zip(names, v.values, strict=True):
        kind = value.WhichOneof("kind")
        features.setdefault(group, {})[name] = None if kind == "null_value" else getattr(value, kind)
    return FeatureVector(v.user_id, status, features, _time(v.computed_at) if v.HasField("computed_at") else None,
                         v.source_watermark if v.HasField("source_watermark") else None, v.cache_hit)


def _answer(r: Any, vectors: list[FeatureVector], counts: dict[str, int]) -> OnlineFeatures:
    return OnlineFeatures(r.feature_set, r.version, _time(r.as_of), r.degraded, r.degraded_reason or None,
                          vectors, counts)


class GrpcTransport:
    """Calls GetUserFeatures and BatchGetUserFeatures on ``target`` (``host:port``)."""

    def __init__(self, target: str, secure: bool = False, metadata: Sequence[tuple[str, str]] = ()) -> None:
        try:
            import grpc
        except ModuleNotFoundError:
            raise ModuleNotFoundError("the gRPC transport needs grpcio: pip install 'feature-store-client[grpc]'") \
                from None
        from feature_store_client.v1 import METHODS

        self._grpc = grpc
        self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if secure \
            else grpc.insecure_channel(target)
        self.metadata = tuple(metadata)
        self._pb = {name: m for name, m in METHODS.items()}
        self._stubs = {name: self.channel.unary_unary(m.path, request_serializer=m.request.SerializeToString,
                                                      response_deserializer=m.response.FromString)
                       for name, m in METHODS.items()}

    def read_one(self, user_id: str, features: Sequence[str] | None, version: int | None, feature_set: str | None,
                 timeout_s: float) -> OnlineFeatures:
        request = self._pb["GetUserFeatures"].request(user_id=user_id, features=features or (),
                                                      feature_set=feature_set or "", version=version)
        r = self._call("GetUserFeatures", request, timeout_s)
        names = [(f.group, f.name) for f in r.features]
        return _answer(r, [_vector(r.vector, names)], {"ok": 1, "unknown_user": 0, "unavailable": 0})

    def read_batch(self, user_ids: Sequence[str], features: Sequence[str] | None, version: int | None,
                   feature_set: str | None, timeout_s: float) -> OnlineFeatures:
        request = self._pb["BatchGetUserFeatures"].request(user_ids=user_ids, features=features or (),
                                                           feature_set=feature_set or "", version=version)
        r = self._call("BatchGetUserFeatures", request, timeout_s)
        names = [(f.group, f.name) for f in r.features]
        counts = {"ok": r.counts.ok, "unknown_user": r.counts.unknown_user, "unavailable": r.counts.unavailable}
        return _answer(r, [_vector(v, names) for v in r.results], counts)

    def _call(self, method: str, request: Any, timeout_s: float) -> Any:
        try:
            return self._stubs[method](request, timeout=timeout_s, metadata=self.metadata)
        except self._grpc.RpcError as exc:
            raise _error(exc) from None

    def close(self) -> None:
        self.channel.close()


def _error(exc: Any) -> Exception:
    """The client error of a failed call: the code from its ErrorInfo, the delay from its RetryInfo."""
    code_name = exc.code().name
    if code_name == "DEADLINE_EXCEEDED":
        return DeadlineExceeded(exc.details() or "deadline exceeded")
    reason, retry_after, features = code_name.lower(), None, []
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(exc)
    for detail in status.details if status is not None else ():
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
            features = [f for f in info.metadata.get("features", "").split(",") if f]
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    if code_name == "UNAVAILABLE" and status is None:
        reason = "connection_failed"  # no details: the channel could not reach a server
    kind = BY_GRPC_CODE.get(code_name, ServerError)
    return kind(reason, exc.details() or code_name, grpc_code=code_name, retry_after_s=retry_after, features=features)
