"""Handlers of the feature read endpoints (single and batch): authorize, parse, call the reader, serialize.

Every read checks its input (400s), then resolves its caller once (transports/access.py: ``authorize``;
401s) before anything is read, then applies the caller's scope (domain/access.py; 403s) and reads with
the caller's rate limit (429).
"""

from __future__ import annotations

import re
from typing import Any

import flask
from pydantic import ValidationError

from feature_store.domain.access import Caller
from feature_store.domain.audit import iso
from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import BatchTooLarge, DependencyUnavailable, UnknownUser
from feature_store.services.reader import ReadOutcome
from feature_store.transports.access import authorize
from feature_store.transports.http import Endpoint, body_bytes
from feature_store.transports.read_audit import check_audit, read_context, record_read, served_vector
from feature_store.transports.requests import BatchRequest, ReadQuery, check_user_id, invalid_body
from feature_store.wiring import Services, services


def feature_set_for(svc: Services, name: str | None, version: int | None) -> FeatureSet:
    """The version asked for, else the one served (the ``active`` pointer: services/versions.py)."""
    name = name or svc.settings.serving.feature_set
    return get_feature_set(name, version if version is not None else svc.versions.served(name))


def _envelope(fs: FeatureSet, outcome: ReadOutcome, withheld: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"feature_set": fs.name, "version": fs.version, "as_of": iso(outcome.as_of),
                            "degraded": outcome.degraded}
    if outcome.degraded_reason:
        body["degraded_reason"] = outcome.degraded_reason
    if withheld:
        body["withheld_features"] = withheld
    return body


def scoped_read(svc: Services, caller: Caller, fs: FeatureSet, user_ids: list[str],
                names: list[str] | None) -> tuple[ReadOutcome, list[str] | None, list[str]]:
    """The caller's scope applied (403s), then the read under its rate limit: outcome, names read, withheld."""
    caller.scope.check_batch(len(user_ids))
    caller.scope.check_feature_set(fs)
    names, withheld = caller.scope.features(fs, names)
    return svc.reader.read(fs, user_ids, names, caller), names, withheld


def read_one(request: flask.Request, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``GET /api/v1/features/user/{user_id}``."""
    svc = services()
    user_id = check_user_id(match.group("user_id"))  # checked before credentials: a malformed id needs no lookup
    query = ReadQuery.parse(request.args.to_dict())
    ctx = read_context()
    caller = authorize(svc, request.headers)
    fs = feature_set_for(svc, query.feature_set, query.version)
    check_audit(svc)
    outcome, names, withheld = scoped_read(svc, caller, fs, [user_id], query.features)
    result = outcome.results[0]
    served = served_vector(svc, result) if result.status == "ok" else None
    record_read(svc, ctx, caller, "single", fs, fs.select(names).names, outcome, [served])
    if result.status == "unknown_user":
        raise UnknownUser(f"no user with id {user_id!r}")
    if served is None:
        raise DependencyUnavailable("postgres", "the vector is not cached and the source cannot be read")
    return 200, {"user_id": user_id, **_envelope(fs, outcome, withheld), **served}


def parse_batch(svc: Services, body: bytes) -> BatchRequest:
    """A batch body (JSON bytes) as its model: 400 ``invalid_body``/``invalid_user_id``, ``batch_too_large``.

    gRPC's BatchGetUserFeatures passes its message through here as JSON too, so both transports refuse
    the same input with the same code and sentence.
    """
    try:
        parsed = BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc, user_id_fields=("user_ids",)) from None
    limit = svc.settings.serving.batch_max
    if len(parsed.user_ids) > limit:
        raise BatchTooLarge(f"{len(parsed.user_ids)} user ids in one batch; the limit is {limit}")
    return parsed


def read_batch(request: flask.Request, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST /api/v1/features/batch`` with ``{"user_ids": [...], "features": [...]?, ...}``."""
    svc = services()
    body = parse_batch(svc, body_bytes(request))
    ctx = read_context()
    caller = authorize(svc, request.headers)
    fs = feature_set_for(svc, body.feature_set, body.version)
    check_audit(svc)
    outcome, names, withheld = scoped_read(svc, caller, fs, body.user_ids, body.features)
    results = []
    served: list[dict[str, Any] | None] = []
    counts = {"ok": 0, "unknown_user": 0, "unavailable": 0}
    for r in outcome.results:
        counts[r.status] += 1
        item: dict[str, Any] = {"user_id": r.user_id, "status": r.status}
        vector = served_vector(svc, r) if r.status == "ok" else None
        if vector is not None:
            item.update(vector)
        served.append(vector)
        results.append(item)
    record_read(svc, ctx, caller, "batch", fs, fs.select(names).names, outcome, served)
    return 200, {**_envelope(fs, outcome, withheld), "results": results, "counts": counts}


READ_ONE = Endpoint(re.compile(r"/api/v1/features/user/(?P<user_id>[^/]*)"), ("GET",), read_one,
                    frozenset(ReadQuery.model_fields))
READ_BATCH = Endpoint(re.compile(r"/api/v1/features/batch"), ("POST",), read_batch)
