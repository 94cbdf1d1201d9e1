"""Decision receipts: a read's audit record, each served vector recomputed from the offline store, digests compared.

For each vector a read served, the user's state is computed from the offline store (mirrors and
CDC changelog, sql/bigquery/queries/user_state_asof.sql) as of the instant the served state was
computed (its ``computed_at``, tagged with the served watermark), finished by the catalog at the
instant the read evaluated features (``as_of``), and digested with the served tags exactly as the
read digested what it answered (domain/audit.py). ``matches`` says whether the two digests agree;
when they cannot be compared ``reason`` says why:

- ``offline_not_yet_landed``: the offline store's last export of some mirrored table is older than
  the served state, so what the read saw is not all there yet (run the ETL, ask again);
- ``offline_unknown_user``: the offline store has no such user;
- ``not_served``: the read answered no vector for this user (unknown user, unavailable);
- ``digest_differs``: recomputed and compared, and the vectors differ (the record was altered, or the
  online and offline paths disagree: either is worth an investigation).
"""

from __future__ import annotations

from typing import Any, Protocol

from feature_store.domain.audit import (
    DIGEST_VERSION,
    ReadAudit,
    VectorAudit,
    from_rows,
    is_request_id,
    iso,
    vector_digest,
)
from feature_store.domain.catalog import Instant, get_feature_set
from feature_store.domain.state import UserState
from feature_store.errors import InvalidParameter, NotFound


def checked_request_id(text: str) -> str:
    """``text`` when it is a request id this server could have made; 400 ``invalid_request_id`` otherwise."""
    if not is_request_id(text):
        raise InvalidParameter("a request id is the 26-character ULID a read answered in X-Request-Id",
                               code="invalid_request_id")
    return text


class AuditTrailPort(Protocol):
    def rows(self, request_id: str) -> list[dict[str, Any]]: ...

    def landed_until(self) -> float | None: ...

    def states_at(self, requests: list[tuple[str, float]]) -> list[UserState | None]: ...


class Receipts:
    """Answers ``GET /api/v1/receipts/{request_id}``."""

    def __init__(self, trail: AuditTrailPort) -> None:
        self.trail = trail

    def receipt(self, request_id: str) -> dict[str, Any]:
        rows = self.trail.rows(checked_request_id(request_id))
        if not rows:
            raise NotFound("no audit record of this request id (yet: records land within seconds of the read)",
                           code="receipt_not_found")
        audit = from_rows(rows)
        fs = get_feature_set(audit.feature_set, audit.version)
        selection = fs.select(audit.feature_names or None)
        landed = self.trail.landed_until()
        served = [v for v in audit.vectors if v.status == "ok" and v.computed_at_epoch is not None]
        comparable = [v for v in served if landed is not None and landed >= (v.computed_at_epoch or 0)]
        states = dict(zip((id(v) for v in comparable),
                          self.trail.states_at([(v.user_id, v.computed_at_epoch or 0.0) for v in comparable]),
                          strict=True))
        at = Instant(audit.as_of)
        vectors = []
        for v in audit.vectors:
            if v.status != "ok" or v.computed_at_epoch is None:
                vectors.append(_answer(v, None, "not_served"))
            elif id(v) not in states:
                vectors.append(_answer(v, None, "offline_not_yet_landed"))
            else:
                state = states[id(v)]
                if state is None:
                    vectors.append(_answer(v, None, "offline_unknown_user"))
                    continue
                features = fs.evaluate(state, at, selection)
                vectors.append(_answer(v, features, None, audit.digest_version))
        compared = [x["matches"] for x in vectors if x["matches"] is not None]
        return {"receipt": {"request_id": audit.request_id, "record": _record(audit), "vectors": vectors,
                            "matches": bool(compared) and all(compared) and len(compared) == len(served),
                            "offline_landed_until": iso(landed)}}


def _answer(v: VectorAudit, features: dict[str, dict[str, Any]] | None, reason: str | None,
            version: int = DIGEST_VERSION) -> dict[str, Any]:
    out: dict[str, Any] = {"user_id": v.user_id, "status": v.status, "digest": v.digest, "recomputed_digest": None,
                           "matches": None, "reason": reason}
    if features is not None:
        recomputed = vector_digest(features, v.source_watermark, v.computed_at, version)
        out.update(recomputed_digest=recomputed, matches=recomputed == v.digest,
                   reason=None if recomputed == v.digest else "digest_differs", recomputed_features=features)
    return out


def _record(audit: ReadAudit) -> dict[str, Any]:
    return {
        "request_id": audit.request_id, "client_request_id": audit.client_request_id, "client_id": audit.client_id,
        "purpose": audit.purpose, "kind": audit.kind, "transport": audit.transport,
        "feature_set": audit.feature_set, "version": audit.version, "feature_names": list(audit.feature_names),
        "as_of": iso(audit.as_of), "served_at": iso(audit.served_at), "degraded_reason": audit.degraded_reason,
        "vectors": [{"user_id": v.user_id, "status": v.status, "cache_hit": v.cache_hit,
                     "source_watermark": v.source_watermark, "computed_at": v.computed_at, "digest": v.digest}
                    for v in audit.vectors],
    }
