"""The gRPC edge of the online reads (featurestore.v1): parse, call the reader, answer; errors to statuses.

The same reader and served-version pointer as the REST functions (``services().reader``,
``services().versions``), the same validation (transports/requests.py), the same preparation
(features_api.prepare_read: credentials, audit check, scope, in REST's order) and the same errors, so
the two transports answer the same users with the same vectors and the same stable codes
(tests/grpc_serving/test_grpc_parity.py). Errors become gRPC statuses here and only here:

- ``GRPC_CODE_BY_HTTP`` maps a FeatureStoreError's HTTP status to its gRPC code: one table, so an
  error class added with a new status (401, 403, 429 of the security issue) maps without code here;
- every error's details (``grpc-status-details-bin``, a google.rpc.Status) hold an ErrorInfo whose
  ``reason`` is the REST error's code and, when the error says when to retry (``retry_after_s``), a
  RetryInfo with that delay, as REST's Retry-After;
- a request that is not a valid protobuf message is INVALID_ARGUMENT ``invalid_body``, never the
  framework's INTERNAL; anything unexpected is INTERNAL with a generic sentence, the traceback logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import orjson
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from feature_store.errors import (
    DependencyUnavailable,
    FeatureOutOfScope,
    FeatureStoreError,
    InvalidBody,
    UnknownUser,
)
from feature_store.logs import get_logger, set_trace
from feature_store.services.reader import VectorResult
from feature_store.stores.dialect import format_watermark
from feature_store.transports import grpc_wire
from feature_store.transports.features_api import PreparedRead, parse_batch, prepare_read
from feature_store.transports.read_audit import audited_vector, begin, record_read
from feature_store.transports.requests import ReadQuery, check_user_id
from feature_store.wiring import Services, services
from feature_store_client.v1 import ERROR_DOMAIN, METHODS, SERVICE_NAME, feature_store_pb2

log = get_logger("feature_store.grpc")

# HTTP status of a FeatureStoreError -> gRPC code (https://grpc.github.io/grpc/core/md_doc_statuscodes.html
# and google.rpc.Code's HTTP mapping). Statuses not listed are INTERNAL.
GRPC_CODE_BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_INTERNAL = "the server failed to answer; the error is logged"


class _Undecodable:
    """What the request deserializer returns for bytes that are not the method's message."""


_UNDECODABLE = _Undecodable()


def status_of(exc: FeatureStoreError) -> status_pb2.Status:
    """The google.rpc.Status of an error: its code, sentence, ErrorInfo and (when it has one) RetryInfo."""
    code = GRPC_CODE_BY_HTTP.get(exc.status, grpc.StatusCode.INTERNAL)
    info = AnyMessage()
    metadata = {"http_status": str(exc.status)}
    if isinstance(exc, FeatureOutOfScope):
        metadata["features"] = ",".join(exc.features)
    info.Pack(error_details_pb2.ErrorInfo(reason=exc.code, domain=ERROR_DOMAIN, metadata=metadata))
    details = [info]
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        retry = AnyMessage()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=int(retry_after))))
        details.append(retry)
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


def _watermark(svc: Services, result: VectorResult) -> str | None:
    return None if result.watermark is None else format_watermark(svc.dialect, result.watermark)


def prepare_get(request: Any, metadata: Mapping[str, str]) -> PreparedRead:
    """GetUserFeatures checked, authorized and scoped: the rules of ``GET /api/v1/features/user/{user_id}``."""
    svc = services()
    user_id = check_user_id(request.user_id)  # as REST: input checked before credentials are looked up
    # The query string REST would receive, parsed by REST's own model: the same refusals, word for word.
    args = {"features": ",".join(request.features)} if request.features else {}
    if request.feature_set:
        args["feature_set"] = request.feature_set
    if request.HasField("version"):
        args["version"] = str(request.version)
    query = ReadQuery.parse(args)
    return prepare_read(svc, metadata, [user_id], query.feature_set, query.version, query.features)


def get_user_features(request: Any, metadata: Mapping[str, str]) -> bytes:
    """GetUserFeatures: the rules of ``GET /api/v1/features/user/{user_id}``."""
    started = time.perf_counter()
    read = prepare_get(request, metadata)
    outcome = read.read()
    svc, fs = read.svc, read.fs
    result = outcome.results[0]
    selection = fs.select(read.names)
    watermark = _watermark(svc, result)
    record_read(svc, read.ctx, read.caller, "single", fs, selection.names, outcome,
                [audited_vector(result, watermark)])
    if result.status == "unknown_user":
        raise UnknownUser(f"no user with id {result.user_id!r}")
    if result.status == "unavailable":
        raise DependencyUnavailable("postgres", "the vector is not cached and the source cannot be read")
    head = grpc_wire.envelope(fs, outcome, selection)
    vector = grpc_wire.user_vector(result, watermark)
    return grpc_wire.single_response(head, vector, round((time.perf_counter() - started) * 1000, 3))


def prepare_batch_get(request: Any, metadata: Mapping[str, str]) -> PreparedRead:
    """BatchGetUserFeatures checked, authorized and scoped: the rules of ``POST /api/v1/features/batch``."""
    svc = services()
    raw: dict[str, Any] = {"user_ids": list(request.user_ids)}
    if request.features:
        raw["features"] = list(request.features)
    if request.feature_set:
        raw["feature_set"] = request.feature_set
    if request.HasField("version"):
        raw["version"] = request.version
    # The body REST would receive, parsed by REST's own code: the same refusals, word for word.
    body = parse_batch(svc, orjson.dumps(raw))
    return prepare_read(svc, metadata, body.user_ids, body.feature_set, body.version, body.features)


def batch_get_user_features(request: Any, metadata: Mapping[str, str]) -> bytes:
    """BatchGetUserFeatures: the rules of ``POST /api/v1/features/batch``, the body made from the message."""
    started = time.perf_counter()
    read = prepare_batch_get(request, metadata)
    outcome = read.read()
    svc, fs = read.svc, read.fs
    selection = fs.select(read.names)
    counts = {"ok": 0, "unknown_user": 0, "unavailable": 0}
    vectors, served = [], []
    for r in outcome.results:
        counts[r.status] += 1
        watermark = _watermark(svc, r)
        vectors.append(grpc_wire.user_vector(r, watermark))
        served.append(audited_vector(r, watermark))
    record_read(svc, read.ctx, read.caller, "batch", fs, selection.names, outcome, served)
    head = grpc_wire.envelope(fs, outcome, selection)
    return grpc_wire.batch_response(head, vectors, counts, round((time.perf_counter() - started) * 1000, 3))


Handler = Callable[[Any, Mapping[str, str]], bytes]
HANDLERS: dict[str, Handler] = {"GetUserFeatures": get_user_features,
                                "BatchGetUserFeatures": batch_get_user_features}


def _edge(method: str, handler: Handler) -> Callable[[Any, grpc.ServicerContext], bytes]:
    """Run ``handler``; turn its error into a status with details; one access log line per call."""

    def call(request: Any, context: grpc.ServicerContext) -> bytes:
        started = time.perf_counter()
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        set_trace(metadata.get("x-cloud-trace-context"))
        ids = begin("grpc", lambda name: metadata.get(name.lower()))
        failed: status_pb2.Status | None = None
        try:
            if request is _UNDECODABLE:
                raise InvalidBody(f"the request is not a valid {METHODS[method].request.DESCRIPTOR.full_name} "
                                  "message")
            answer = handler(request, metadata)
        except FeatureStoreError as exc:
            failed = status_of(exc)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"method": method}})
            failed = status_pb2.Status(code=grpc.StatusCode.INTERNAL.value[0], message=_INTERNAL)
        # A failed call is a WARNING: bench/grpc_serving.py counts them.
        if failed is not None or log.isEnabledFor(logging.INFO):
            log.log(logging.INFO if failed is None else logging.WARNING, "rpc", extra={"fields": {
                "request_id": ids.request_id,
                "rpc": {"method": f"{SERVICE_NAME}/{method}", "code": grpc.StatusCode.OK.name if failed is None
                        else _CODE_NAMES[failed.code], "latency": f"{time.perf_counter() - started:.6f}s"},
                **({"error_code": _reason(failed)} if failed is not None else {})}})
        # The request id goes back in the trailing metadata, of an error too.
        if failed is not None:
            status = rpc_status.to_status(failed)
            context.abort_with_status(_with_trailer(status, ("x-request-id", ids.request_id)))
        context.set_trailing_metadata((("x-request-id", ids.request_id),))
        return answer

    return call


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


class _Status(grpc.Status):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def _with_trailer(status: Any, item: tuple[str, str]) -> grpc.Status:
    return _Status(status.code, status.details, (*tuple(status.trailing_metadata or ()), item))


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return "internal"


def _deserializer(message: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError:
            return _UNDECODABLE

    return parse


def _identity(data: bytes) -> bytes:
    return data


def rpc_handler() -> grpc.GenericRpcHandler:
    """The featurestore.v1.FeatureStore service: every method of the proto, each with its handler."""
    missing = set(METHODS) - set(HANDLERS)
    if missing:
        raise RuntimeError(f"methods of {SERVICE_NAME} without a handler: {sorted(missing)}")
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        name: grpc.unary_unary_rpc_method_handler(_edge(name, HANDLERS[name]),
                                                  request_deserializer=_deserializer(m.request),
                                                  response_serializer=_identity)
        for name, m in METHODS.items()
    })


__all__ = ["GRPC_CODE_BY_HTTP", "HANDLERS", "feature_store_pb2", "rpc_handler", "status_of"]
