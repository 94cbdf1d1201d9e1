"""Request ids and the audit of reads at the edges (REST and gRPC share this).

Each request gets a request id of ours when it arrives (``begin``); the edge returns it with every
answer, error or not (REST: ``X-Request-Id`` and ``request_id`` in the body; gRPC: the
``x-request-id`` trailing metadata). A read handler then asks for its ``ReadContext`` (the ids, the
purpose it states) and, once the reader answered, ``record_read`` hands the read to the
audit recorder (services/audit.py), which never makes the request wait on the sink.
"""

from __future__ import annotations

import contextvars
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from feature_store.domain.access import Caller
from feature_store.domain.audit import ReadAudit, VectorAudit, check_purpose, client_request_id, iso, new_request_id
from feature_store.domain.catalog import FeatureSet
from feature_store.errors import InvalidParameter
from feature_store.services.reader import ReadOutcome, VectorResult
from feature_store.stores.dialect import format_watermark
from feature_store.wiring import Services

Header = Callable[[str], "str | None"]

@dataclass(frozen=True, slots=True)
class RequestIds:
    request_id: str
    client_request_id: str | None
    transport: str
    header: Header


@dataclass(frozen=True, slots=True)
class ReadContext:
    request_id: str
    client_request_id: str | None
    transport: str
    purpose: str | None


_current: contextvars.ContextVar[RequestIds | None] = contextvars.ContextVar("request_ids", default=None)


def begin(transport: str, header: Header) -> RequestIds:
    """A new request id for the request being served (and the caller's own, when well formed)."""
    ids = RequestIds(new_request_id(time.time_ns() // 1_000_000, os.urandom(10)),
                     client_request_id(header("X-Request-Id")), transport, header)
    _current.set(ids)
    return ids


def read_context() -> ReadContext:
    """The ids and purpose of the read being served; 400 ``invalid_purpose`` for a bad X-Purpose."""
    ids = _current.get()
    if ids is None:  # a handler called outside an edge (a test calling it directly)
        ids = begin("direct", lambda name: None)
    try:
        purpose = check_purpose(ids.header("X-Purpose"))
    except ValueError as exc:
        raise InvalidParameter(str(exc), code="invalid_purpose") from None
    return ReadContext(ids.request_id, ids.client_request_id, ids.transport, purpose)


def served_vector(svc: Services, result: VectorResult) -> dict[str, Any]:
    """A vector as the read endpoints serve it (and as its digest covers it)."""
    return {
        "features": result.features,
        "computed_at": iso(result.computed_at),
        "source_watermark": None if result.watermark is None else format_watermark(svc.dialect, result.watermark),
        "cache_hit": result.cache_hit,
    }


def audited_vector(result: VectorResult, watermark: str | None) -> dict[str, Any] | None:
    """What ``record_read`` needs of a vector served without its JSON (gRPC): ``served_vector``'s fields,
    ``computed_at`` left to the audit's sender thread (the same ``iso`` text: VectorAudit.served_computed_at)."""
    if result.status != "ok":
        return None
    return {"features": result.features, "computed_at": None, "source_watermark": watermark}


def check_audit(svc: Services) -> None:
    """503 ``audit_unavailable`` before reading, when reads fail closed and the audit sink is behind."""
    recorder = svc.audit
    if recorder is not None:
        recorder.check()


def record_read(svc: Services, ctx: ReadContext, caller: Caller, kind: str, fs: FeatureSet, names: Sequence[str],
                outcome: ReadOutcome, served: Sequence[dict[str, Any] | None]) -> None:
    """Queue the audit record of ``caller``'s read; ``served[i]`` is what was answered for ``outcome.results[i]``
    (or None), ``names`` the features it was given (its scope applied)."""
    recorder = svc.audit
    if recorder is None:
        return
    vectors = tuple(
        VectorAudit(r.user_id, r.status, r.cache_hit) if s is None else
        VectorAudit(r.user_id, r.status, r.cache_hit, s["source_watermark"], s["computed_at"], r.computed_at,
                    features=s["features"])
        for r, s in zip(outcome.results, served, strict=True))
    recorder.record(ReadAudit(
        request_id=ctx.request_id, client_id=caller.client_id, kind=kind, transport=ctx.transport,
        feature_set=fs.name, version=fs.version, feature_names=tuple(names), as_of=outcome.as_of,
        served_at=time.time(), vectors=vectors, client_request_id=ctx.client_request_id, purpose=ctx.purpose,
        degraded_reason=outcome.degraded_reason))
