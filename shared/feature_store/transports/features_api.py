"""Handlers of the feature read endpoints (single and batch): parse, call the reader, serialize."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import flask
from pydantic import ValidationError

from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import (
    BatchTooLarge,
    DependencyUnavailable,
    InvalidBody,
    InvalidParameter,
    NotFound,
    UnknownUser,
)
from feature_store.services.reader import ReadOutcome, VectorResult
from feature_store.stores.dialect import format_watermark
from feature_store.transports.http import json_body
from feature_store.transports.requests import BatchRequest, check_user_id, parse_feature_list
from feature_store.wiring import Services, services

_SINGLE_PATH = re.compile(r"^(?:.*/)?features/user/([^/]*)/?$")


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidParameter(f"version must be a positive whole number, got {text!r}")
    return int(text)


def _feature_set(svc: Services, name: str, version: int | None) -> FeatureSet:
    """The version asked for, else the one served (the ``active`` pointer: services/versions.py)."""
    return get_feature_set(name, version if version is not None else svc.versions.served(name))


def _vector(svc: Services, result: VectorResult) -> dict[str, Any]:
    return {
        "features": result.features,
        "computed_at": _iso(result.computed_at),
        "source_watermark": None if result.watermark is None else format_watermark(svc.dialect, result.watermark),
        "cache_hit": result.cache_hit,
    }


def _envelope(fs: FeatureSet, outcome: ReadOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {"feature_set": fs.name, "version": fs.version, "as_of": _iso(outcome.as_of),
                            "degraded": outcome.degraded}
    if outcome.degraded_reason:
        body["degraded_reason"] = outcome.degraded_reason
    return body


def read_one(request: flask.Request) -> tuple[int, dict[str, Any]]:
    """``GET /api/v1/features/user/{user_id}`` or ``GET /?user_id=``."""
    match = _SINGLE_PATH.match(request.path)
    if match:
        user_id = check_user_id(match.group(1))
    elif request.path.strip("/") == "" or request.path.rstrip("/").endswith("read_features"):
        user_id = check_user_id(request.args.get("user_id", ""))
    else:
        raise NotFound(f"no route {request.path}; use /api/v1/features/user/{{user_id}}", code="route_not_found")
    svc = services()
    fs = _feature_set(svc, request.args.get("feature_set", svc.settings.serving.feature_set),
                      _version(request.args.get("version")))
    outcome = svc.reader.read(fs, [user_id], parse_feature_list(request.args.get("features")))
    result = outcome.results[0]
    if result.status == "unknown_user":
        raise UnknownUser(f"no user with id {user_id!r}")
    if result.status == "unavailable":
        raise DependencyUnavailable("postgres", "the vector is not cached and the source cannot be read")
    return 200, {"user_id": user_id, **_envelope(fs, outcome), **_vector(svc, result)}


def read_batch(request: flask.Request) -> tuple[int, dict[str, Any]]:
    """``POST /api/v1/features/batch`` with ``{"user_ids": [...], "features": [...]?}``."""
    svc = services()
    raw = json_body(request)
    if not isinstance(raw, dict):
        raise InvalidBody("the body must be a JSON object with a user_ids list")
    limit = svc.settings.serving.batch_max
    ids = raw.get("user_ids")
    if isinstance(ids, list) and len(ids) > limit:
        raise BatchTooLarge(f"{len(ids)} user ids in one batch; the limit is {limit}")
    try:
        body = BatchRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidBody(f"{where}: {first['msg']}") from None
    for i, user_id in enumerate(body.user_ids):
        check_user_id(user_id, f"user_ids[{i}]")
    fs = _feature_set(svc, body.feature_set, body.version)
    outcome = svc.reader.read(fs, body.user_ids, body.features)
    results = []
    counts = {"ok": 0, "unknown_user": 0, "unavailable": 0}
    for r in outcome.results:
        counts[r.status] += 1
        item: dict[str, Any] = {"user_id": r.user_id, "status": r.status}
        if r.status == "ok":
            item.update(_vector(svc, r))
        results.append(item)
    return 200, {**_envelope(fs, outcome), "results": results, "counts": counts}
