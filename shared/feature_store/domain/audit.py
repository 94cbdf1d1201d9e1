"""The audit trail of reads: request ids, the purpose a caller states, and one record per read with a digest per vector.

Pure: no I/O, no clock, no randomness of its own (callers pass the time and the random bytes).

- A **request id** is a ULID (26 Crockford base-32 characters: 48 bits of milliseconds, then 80
  random bits), so ids sort by the instant they were made. The server makes one for every read;
  a caller's ``X-Request-Id`` is kept as ``client_request_id`` only when it is itself well formed
  (``CLIENT_REQUEST_ID``) and never used as the audit key.
- The **digest** of a served vector is sha256 over ``canonical_vector``: exactly what the response
  carried for that user (feature names and values, ``source_watermark``, ``computed_at`` as served),
  in one canonical JSON form. Whoever holds the response can recompute it; a receipt recomputes it
  from the offline store (services/receipts.py). Values are never recorded, only their digest.
- An audit **row** is one (request, user): ``ReadAudit.rows()`` gives the JSON rows of the BigQuery
  table ``audit_reads`` (terraform/modules/bigquery/schemas/audit_reads.json), which the Pub/Sub
  BigQuery subscription writes as they are, one message per row.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REQUEST_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
# A caller's own id: what common tracing ids look like (uuid, ULID, hex), bounded, no spaces or controls.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")
PURPOSE_MAX = 128
# The version of the canonical form: part of every audit row, so a later form never re-reads an older digest.
DIGEST_VERSION = 2


def new_request_id(epoch_ms: int, random80: bytes) -> str:
    """A ULID of this millisecond and 10 random bytes."""
    if len(random80) != 10 or not 0 <= epoch_ms < 1 << 48:
        raise ValueError("a request id needs a 48-bit millisecond time and 10 random bytes")
    value = (epoch_ms << 80) | int.from_bytes(random80, "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def is_request_id(text: str) -> bool:
    """Whether ``text`` is a request id this server could have made (upper-case ULID)."""
    return REQUEST_ID.fullmatch(text) is not None


def request_id_time(request_id: str) -> float:
    """The epoch seconds a request id was made at (its first 48 bits)."""
    value = 0
    for char in request_id[:10]:
        value = value * 32 + _CROCKFORD.index(char)
    return value / 1000


def client_request_id(header: str | None) -> str | None:
    """A caller's ``X-Request-Id`` when it is well formed, else None (it is then simply not recorded)."""
    if header is None or CLIENT_REQUEST_ID.fullmatch(header) is None:
        return None
    return header


def check_purpose(header: str | None) -> str | None:
    """The ``X-Purpose`` a caller states: printable ASCII, at most PURPOSE_MAX characters; ValueError otherwise."""
    if header is None or header == "":
        return None
    if len(header) > PURPOSE_MAX:
        raise ValueError(f"X-Purpose is {len(header)} characters long; at most {PURPOSE_MAX} are kept")
    if not all(" " <= c <= "~" for c in header):
        raise ValueError("X-Purpose must be printable ASCII (no control characters)")
    return header


def iso(epoch: float | None) -> str | None:
    """An instant as the read endpoints serve it: ISO 8601, UTC, milliseconds."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=4096)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def epoch_micros(epoch: float) -> tuple[int, int]:
    """Whole seconds and microseconds of an instant, rounded as ``datetime.fromtimestamp`` rounds it
    (half to even), so every edge states an instant as the REST edge's ISO strings do."""
    frac, whole = math.modf(epoch)
    micros, second = round(frac * 1e6), int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    return second, micros


def iso_micros(epoch: float) -> str:
    """``datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")``, at a third of its cost:
    one per audit row, on the serving instance."""
    second, micros = epoch_micros(epoch)
    return f"{_utc_second(second)}.{micros:06d}Z"


def _canonical_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN or infinity; the catalog never serves them, but be total
    return value


def canonical_vector(features: Mapping[str, Mapping[str, Any]], watermark: str | None,
                     computed_at: str | None, version: int = DIGEST_VERSION) -> bytes:
    """The canonical bytes of one served vector, in the form of digest ``version``.

    ``features`` is the served ``{group: {name: value}}``; ``watermark`` and ``computed_at`` are the
    strings the response carried. JSON with keys sorted at every level, no whitespace, UTF-8, numbers
    as orjson writes them (a float as its shortest round-trip form): what
    ``orjson.dumps(document, option=OPT_SORT_KEYS)`` writes, the document being

    - version 2 (current): ``{"computed_at", "features": {group: {name: value}}, "source_watermark", "v": 2}``,
      the features exactly as the answer carried them (a non-finite float, which the catalog never
      serves, as the ``null`` the answer would carry);
    - version 1 (rows recorded before): groups dropped, ``{"computed_at", "features": {name: value},
      "source_watermark", "v": 1}``, a non-finite float as its ``repr``. Flattening cost a third of the
      audit's CPU per row, on the serving instance.
    """
    document: dict[str, Any]
    if version == 1:
        flat = {name: _canonical_value(value) for group in features.values() for name, value in group.items()}
        document = {"computed_at": computed_at, "features": flat, "source_watermark": watermark, "v": 1}
    elif version == 2:
        document = {"computed_at": computed_at, "features": features, "source_watermark": watermark, "v": 2}
    else:
        raise ValueError(f"unknown digest version {version}")
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def vector_digest(features: Mapping[str, Mapping[str, Any]], watermark: str | None, computed_at: str | None,
                  version: int = DIGEST_VERSION) -> str:
    """sha256 (hex) of ``canonical_vector``."""
    return hashlib.sha256(canonical_vector(features, watermark, computed_at, version)).hexdigest()


@dataclass(slots=True)  # not frozen: a frozen init costs 3x, paid per user of every read on the request path
class VectorAudit:
    """What one user of a read was answered: its status and, when served, the vector's tags and digest."""

    user_id: str
    status: str  # ok | unknown_user | unavailable
    cache_hit: bool
    source_watermark: str | None = None
    computed_at: str | None = None  # as served (ISO 8601, milliseconds); None: made from computed_at_epoch
    computed_at_epoch: float | None = None  # the state's own instant, to recompute it from
    digest: str | None = None  # as recorded; else computed from ``features`` when the row is made
    features: Mapping[str, Mapping[str, Any]] | None = None  # what was served: digested, never recorded

    def served_computed_at(self) -> str | None:
        """``computed_at`` as served: given, or (served without the text: gRPC) ``iso`` of the state's own
        instant, the very string REST serves for it, made here on the sender thread, not on the request's."""
        if self.computed_at is None and self.computed_at_epoch is not None:
            self.computed_at = iso(self.computed_at_epoch)
        return self.computed_at

    def digest_of(self) -> str | None:
        if self.digest is not None or self.features is None:
            return self.digest
        return vector_digest(self.features, self.source_watermark, self.served_computed_at())


@dataclass(frozen=True, slots=True)
class ReadAudit:
    """One read (single or batch) as the audit trail keeps it."""

    request_id: str
    client_id: str
    kind: str  # single | batch
    transport: str  # rest | grpc
    feature_set: str
    version: int
    feature_names: tuple[str, ...]
    as_of: float  # the instant features were evaluated at
    served_at: float  # when the answer was ready
    vectors: tuple[VectorAudit, ...]
    client_request_id: str | None = None
    purpose: str | None = None
    degraded_reason: str | None = None
    digest_version: int = DIGEST_VERSION  # of the digests recorded (an older row's, when read back)

    def rows(self) -> list[dict[str, Any]]:
        """One ``audit_reads`` row per user of the read, in request order (``position``)."""
        head = {
            "request_id": self.request_id, "client_request_id": self.client_request_id, "client_id": self.client_id,
            "purpose": self.purpose, "kind": self.kind, "transport": self.transport, "batch_size": len(self.vectors),
            "feature_set": self.feature_set, "feature_set_version": self.version,
            "feature_names": list(self.feature_names), "as_of": iso_micros(self.as_of),
            "served_at": iso_micros(self.served_at), "degraded_reason": self.degraded_reason,
            "digest_version": self.digest_version,
        }
        return [{**head, "position": i, "user_id": v.user_id, "status": v.status, "cache_hit": v.cache_hit,
                 "source_watermark": v.source_watermark,
                 "computed_at": None if v.computed_at_epoch is None else iso_micros(v.computed_at_epoch),
                 "computed_at_served": v.served_computed_at(), "digest": v.digest_of()}
                for i, v in enumerate(self.vectors)]


def parse_instant(text: str) -> float:
    """Epoch seconds of an ISO 8601 instant as a row holds it (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def from_rows(rows: Sequence[Mapping[str, Any]]) -> ReadAudit:
    """The read whose ``audit_reads`` rows these are (any order; at least one)."""
    ordered = sorted(rows, key=lambda r: int(r["position"]))
    head = ordered[0]

    def instant(value: Any) -> float:
        return value.timestamp() if isinstance(value, datetime) else parse_instant(str(value))

    return ReadAudit(
        request_id=head["request_id"], client_id=head["client_id"], kind=head["kind"], transport=head["transport"],
        feature_set=head["feature_set"], version=int(head["feature_set_version"]),
        feature_names=tuple(head["feature_names"] or ()), as_of=instant(head["as_of"]),
        served_at=instant(head["served_at"]), client_request_id=head.get("client_request_id"),
        purpose=head.get("purpose"), degraded_reason=head.get("degraded_reason"),
        digest_version=int(head.get("digest_version") or 1),
        vectors=tuple(VectorAudit(r["user_id"], r["status"], bool(r["cache_hit"]), r.get("source_watermark"),
                                  r.get("computed_at_served"),
                                  None if r.get("computed_at") is None else instant(r["computed_at"]), r.get("digest"))
                      for r in ordered))
