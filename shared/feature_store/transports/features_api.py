"""Handlers of the feature read endpoints (single and batch): authorize, parse, call the reader, serialize.

Every read checks its input (400s), then resolves its caller once (transports/access.py: ``authorize``;
401s) before anything is read, then applies the caller's scope (domain/access.py; 403s) and reads with
the caller's rate limit (429).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from feature_store.domain.access import Caller
from feature_store.domain.audit import iso
from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import BatchTooLarge, DependencyUnavailable, UnknownUser
from feature_store.services.blocking import Offload, WouldBlock, inline
from feature_store.services.reader import ReadOutcome
from feature_store.transports.access import Headers, authorize
from feature_store.transports.http import Endpoint, Incoming, body_bytes
from feature_store.transports.read_audit import ReadContext, check_audit, read_context, record_read, served_vector
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
    names, withheld = _scope(caller, fs, len(user_ids), names)
    return svc.reader.read(fs, user_ids, names, caller), names, withheld


def _scope(caller: Caller, fs: FeatureSet, users: int, names: list[str] | None) -> tuple[list[str] | None, list[str]]:
    caller.scope.check_batch(users)
    caller.scope.check_feature_set(fs)
    return caller.scope.features(fs, names)


@dataclass(frozen=True, slots=True)
class PreparedRead:
    """A read checked, authorized and scoped, not yet read: what both edges do before the reader runs.

    Preparing has no effect outside the instance (the audit and the rate limit come after), so the async
    edge may start it on the event loop and run it again on its pool when it would block
    (services/blocking.py).
    """

    svc: Services
    ctx: ReadContext
    caller: Caller
    fs: FeatureSet
    user_ids: list[str]
    names: list[str] | None
    withheld: list[str]

    def read(self) -> ReadOutcome:
        return self.svc.reader.read(self.fs, self.user_ids, self.names, self.caller)

    async def read_async(self, offload: Offload) -> ReadOutcome:
        return await self.svc.reader.read_async(self.fs, self.user_ids, self.names, self.caller, offload)


def prepare_read(svc: Services, headers: Headers, user_ids: list[str], feature_set: str | None,
                 version: int | None, features: list[str] | None) -> PreparedRead:
    """A read whose input was checked (400s), authorized (401s), its audit checked (503) and scoped (403s).

    Both transports prepare here (REST: ``prepare_one``, ``prepare_batch``; gRPC: transports/grpc_api.py),
    so they refuse in the same order with the same errors.
    """
    ctx = read_context()
    caller = authorize(svc, headers)
    fs = feature_set_for(svc, feature_set, version)
    check_audit(svc)
    names, withheld = _scope(caller, fs, len(user_ids), features)
    return PreparedRead(svc, ctx, caller, fs, user_ids, names, withheld)


def prepare_one(request: Incoming, match: re.Match[str]) -> PreparedRead:
    svc = services()
    user_id = check_user_id(match.group("user_id"))  # checked before credentials: a malformed id needs no lookup
    query = ReadQuery.parse(request.query_dict())
    return prepare_read(svc, request.headers, [user_id], query.feature_set, query.version, query.features)


def answer_one(read: PreparedRead, outcome: ReadOutcome) -> tuple[int, dict[str, Any]]:
    svc, fs = read.svc, read.fs
    result = outcome.results[0]
    served = served_vector(svc, result) if result.status == "ok" else None
    record_read(svc, read.ctx, read.caller, "single", fs, fs.select(read.names).names, outcome, [served])
    if result.status == "unknown_user":
        raise UnknownUser(f"no user with id {result.user_id!r}")
    if served is None:
        raise DependencyUnavailable("postgres", "the vector is not cached and the source cannot be read")
    return 200, {"user_id": result.user_id, **_envelope(fs, outcome, read.withheld), **served}


def read_one(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``GET /api/v1/features/user/{user_id}``."""
    read = prepare_one(request, match)
    return answer_one(read, read.read())


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


def prepare_batch(request: Incoming, match: re.Match[str]) -> PreparedRead:
    svc = services()
    body = parse_batch(svc, body_bytes(request))
    return prepare_read(svc, request.headers, body.user_ids, body.feature_set, body.version, body.features)


def answer_batch(read: PreparedRead, outcome: ReadOutcome) -> tuple[int, dict[str, Any]]:
    svc, fs = read.svc, read.fs
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
    record_read(svc, read.ctx, read.caller, "batch", fs, fs.select(read.names).names, outcome, served)
    return 200, {**_envelope(fs, outcome, read.withheld), "results": results, "counts": counts}


def read_batch(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST /api/v1/features/batch`` with ``{"user_ids": [...], "features": [...]?, ...}``."""
    read = prepare_batch(request, match)
    return answer_batch(read, read.read())


class Prepared(Protocol):
    """A read ready for the reader (PreparedRead; bench/unguarded's read without the guard)."""

    async def read_async(self, offload: Offload) -> ReadOutcome: ...


P = TypeVar("P", bound=Prepared)


async def read_async(prepare: Callable[[Incoming, re.Match[str]], P],
                     answer: Callable[[P, ReadOutcome], tuple[int, dict[str, Any]]],
                     request: Incoming, match: re.Match[str], offload: Offload) -> tuple[int, dict[str, Any]]:
    """A read on an event loop: prepared inline (on the pool when it would block), Redis awaited, answered inline."""
    try:
        with inline():
            read = prepare(request, match)
    except WouldBlock:
        read = await offload(prepare, request, match)
    return answer(read, await read.read_async(offload))


async def read_one_async(request: Incoming, match: re.Match[str], offload: Offload) -> tuple[int, dict[str, Any]]:
    return await read_async(prepare_one, answer_one, request, match, offload)


async def read_batch_async(request: Incoming, match: re.Match[str], offload: Offload) -> tuple[int, dict[str, Any]]:
    return await read_async(prepare_batch, answer_batch, request, match, offload)


READ_ONE = Endpoint(re.compile(r"/api/v1/features/user/(?P<user_id>[^/]*)"), ("GET",), read_one,
                    frozenset(ReadQuery.model_fields), async_handler=read_one_async)
READ_BATCH = Endpoint(re.compile(r"/api/v1/features/batch"), ("POST",), read_batch, async_handler=read_batch_async)
