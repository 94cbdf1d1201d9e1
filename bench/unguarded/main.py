"""The floor of the read guard: read_features and read_features_batch WITHOUT credentials, scope, rate limit or audit.

Benchmark code only, never deployed (terraform/ and the function folders know nothing of it): the same
edge, parsing, reader and serialization as functions/read_features*, minus ``authorize`` and the
caller's scope, limiter and audit record, so bench/serving.py can print what the guard adds in the same run.
"""

import re
from typing import Any

import flask
import functions_framework

from feature_store.transports.features_api import READ_BATCH, READ_ONE, _envelope, feature_set_for, parse_batch
from feature_store.transports.http import Endpoint, body_bytes, http_edge
from feature_store.transports.read_audit import served_vector
from feature_store.transports.requests import ReadQuery, check_user_id
from feature_store.wiring import services


def _one(request: flask.Request, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    svc = services()
    user_id = check_user_id(match.group("user_id"))
    query = ReadQuery.parse(request.args.to_dict())
    fs = feature_set_for(svc, query.feature_set, query.version)
    outcome = svc.reader.read(fs, [user_id], query.features)
    return 200, {"user_id": user_id, **_envelope(fs, outcome, []), **served_vector(svc, outcome.results[0])}


def _batch(request: flask.Request, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    svc = services()
    body = parse_batch(svc, body_bytes(request))
    fs = feature_set_for(svc, body.feature_set, body.version)
    outcome = svc.reader.read(fs, body.user_ids, body.features)
    counts = {"ok": 0, "unknown_user": 0, "unavailable": 0}
    results = []
    for r in outcome.results:
        counts[r.status] += 1
        vector = served_vector(svc, r) if r.status == "ok" else {}
        results.append({"user_id": r.user_id, "status": r.status, **vector})
    return 200, {**_envelope(fs, outcome, []), "results": results, "counts": counts}


ONE = Endpoint(READ_ONE.path, READ_ONE.methods, _one, READ_ONE.params)
BATCH = Endpoint(READ_BATCH.path, READ_BATCH.methods, _batch, READ_BATCH.params)


@functions_framework.http
def read_features_unguarded(request: flask.Request) -> flask.Response:
    return http_edge(request, ONE)


@functions_framework.http
def read_features_batch_unguarded(request: flask.Request) -> flask.Response:
    return http_edge(request, BATCH)
