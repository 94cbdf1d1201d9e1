"""The floor of the read guard: read_features and read_features_batch WITHOUT credentials, scope, rate limit or audit.

Benchmark code only, never deployed (terraform/ and the function folders know nothing of it): the same
edge, parsing, reader and serialization as functions/read_features*, served the same way (FS_SERVING_MODE),
minus ``authorize`` and the caller's scope, limiter and audit record, so bench/serving.py can print what the
guard adds in the same run.
"""

import re
from dataclasses import dataclass
from typing import Any

from feature_store.domain.catalog import FeatureSet
from feature_store.services.blocking import Offload
from feature_store.services.reader import ReadOutcome
from feature_store.transports.features_api import (
    READ_BATCH,
    READ_ONE,
    _envelope,
    feature_set_for,
    parse_batch,
    read_async,
)
from feature_store.transports.functions import read_function
from feature_store.transports.http import Endpoint, Incoming, body_bytes
from feature_store.transports.read_audit import served_vector
from feature_store.transports.requests import ReadQuery, check_user_id
from feature_store.wiring import Services, services


@dataclass(frozen=True)
class Unguarded:
    svc: Services
    fs: FeatureSet
    user_ids: list[str]
    names: list[str] | None

    def read(self) -> ReadOutcome:
        return self.svc.reader.read(self.fs, self.user_ids, self.names)

    async def read_async(self, offload: Offload) -> ReadOutcome:
        return await self.svc.reader.read_async(self.fs, self.user_ids, self.names, None, offload)


def _prepare_one(request: Incoming, match: re.Match[str]) -> Unguarded:
    svc = services()
    user_id = check_user_id(match.group("user_id"))
    query = ReadQuery.parse(request.query_dict())
    return Unguarded(svc, feature_set_for(svc, query.feature_set, query.version), [user_id], query.features)


def _answer_one(read: Unguarded, outcome: ReadOutcome) -> tuple[int, dict[str, Any]]:
    result = outcome.results[0]
    return 200, {"user_id": result.user_id, **_envelope(read.fs, outcome, []), **served_vector(read.svc, result)}


def _prepare_batch(request: Incoming, match: re.Match[str]) -> Unguarded:
    svc = services()
    body = parse_batch(svc, body_bytes(request))
    return Unguarded(svc, feature_set_for(svc, body.feature_set, body.version), body.user_ids, body.features)


def _answer_batch(read: Unguarded, outcome: ReadOutcome) -> tuple[int, dict[str, Any]]:
    counts = {"ok": 0, "unknown_user": 0, "unavailable": 0}
    results = []
    for r in outcome.results:
        counts[r.status] += 1
        vector = served_vector(read.svc, r) if r.status == "ok" else {}
        results.append({"user_id": r.user_id, "status": r.status, **vector})
    return 200, {**_envelope(read.fs, outcome, []), "results": results, "counts": counts}


def _one(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    read = _prepare_one(request, match)
    return _answer_one(read, read.read())


def _batch(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    read = _prepare_batch(request, match)
    return _answer_batch(read, read.read())


async def _one_async(request: Incoming, match: re.Match[str], offload: Offload) -> tuple[int, dict[str, Any]]:
    return await read_async(_prepare_one, _answer_one, request, match, offload)


async def _batch_async(request: Incoming, match: re.Match[str], offload: Offload) -> tuple[int, dict[str, Any]]:
    return await read_async(_prepare_batch, _answer_batch, request, match, offload)


ONE = Endpoint(READ_ONE.path, READ_ONE.methods, _one, READ_ONE.params, async_handler=_one_async)
BATCH = Endpoint(READ_BATCH.path, READ_BATCH.methods, _batch, READ_BATCH.params, async_handler=_batch_async)
read_features_unguarded = read_function("read_features_unguarded", ONE)
read_features_batch_unguarded = read_function("read_features_batch_unguarded", BATCH)
