"""Handler of refresh_cache: ``POST {"mode": ..., ...}``, one refresher call, the refresher's answer as JSON.

Bodies by mode (every field but ``mode`` optional unless marked):

    {"mode": "full", "feature_set", "version", "run_id", "from_user", "to_user", "shards", "max_chunks",
     "source": "postgres" | "bigquery"}
    {"mode": "incremental", "feature_set", "version", "since": ISO 8601, "max_chunks"}
    {"mode": "users", "feature_set", "version", "user_ids": [...] (required)}
    {"mode": "invalidate", "feature_set", "version", "user_ids": [...]}
    {"mode": "invalidate", "feature_set", "version" (required), "cursor", "force"}    drops the whole version
    {"mode": "switch", "feature_set", "version" (required), "force"}
    {"mode": "stats", "feature_set"}

A long mode answers ``"done": false`` with ``"next"``: the body to post next (a workflow loops on it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from feature_store.errors import BatchTooLarge, InvalidBody, InvalidParameter
from feature_store.transports.http import json_body
from feature_store.transports.requests import check_user_id
from feature_store.wiring import services

MODES = ("full", "incremental", "users", "invalidate", "switch", "stats")
RUN_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_.:-]{0,63}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mode: str
    feature_set: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,63}$")
    version: int | None = Field(None, ge=1)


class FullBody(_Body):
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    from_user: str | None = None
    to_user: str | None = None
    shards: int = Field(1, ge=1, le=256)
    max_chunks: int | None = Field(None, ge=1)
    source: Literal["postgres", "bigquery"] = "postgres"


class IncrementalBody(_Body):
    since: str | None = None
    max_chunks: int | None = Field(None, ge=1)


class UsersBody(_Body):
    user_ids: list[Any] = Field(min_length=1)


class InvalidateBody(_Body):
    user_ids: list[Any] | None = Field(None, min_length=1)
    cursor: int = Field(0, ge=0)
    force: bool = False


class SwitchBody(_Body):
    force: bool = False


_MODELS: dict[str, type[_Body]] = {"full": FullBody, "incremental": IncrementalBody, "users": UsersBody,
                                   "invalidate": InvalidateBody, "switch": SwitchBody, "stats": _Body}


def parse_since(text: str) -> datetime:
    """An ISO 8601 instant (``Z`` or an offset; none means UTC), or 400 ``invalid_watermark``."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"since must be an ISO 8601 timestamp such as 2026-11-23T12:00:00Z, got {text!r}",
                               code="invalid_watermark") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_user_ids(values: list[Any], limit: int) -> list[str]:
    """The ids themselves, or 400: ``batch_too_large`` over ``limit``, ``invalid_user_id`` naming the bad one."""
    if len(values) > limit:
        raise BatchTooLarge(f"{len(values)} user ids in one refresh; the limit is {limit}")
    return [check_user_id(v, f"user_ids[{i}]") for i, v in enumerate(values)]


def parse(raw: Any) -> _Body:
    """The request model of the body's mode; 400 ``unknown_mode`` or ``invalid_body`` otherwise."""
    if not isinstance(raw, dict):
        raise InvalidBody('the body must be a JSON object such as {"mode": "incremental"}')
    mode = raw.get("mode")
    if mode is None:
        raise InvalidBody(f"mode is required: one of {', '.join(MODES)}")
    if not isinstance(mode, str) or mode not in _MODELS:
        raise InvalidParameter(f"unknown mode {mode!r}; modes: {', '.join(MODES)}", code="unknown_mode")
    try:
        return _MODELS[mode].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidBody(f"{where}: {first['msg']}") from None


def refresh(request: flask.Request) -> tuple[int, dict[str, Any]]:
    """``POST /`` with a mode body; see the module docstring."""
    svc = services()
    body = parse(json_body(request))
    settings = svc.settings.refresh
    name = body.feature_set or svc.settings.serving.feature_set
    refresher, admin = svc.refresher, svc.cache_admin
    if isinstance(body, FullBody):
        lo = None if body.from_user is None else check_user_id(body.from_user, "from_user")
        hi = None if body.to_user is None else check_user_id(body.to_user, "to_user")
        return 200, refresher.full(name, body.version, body.run_id, lo, hi, body.shards, settings.budget_s,
                                   body.max_chunks, source=body.source)
    if isinstance(body, IncrementalBody):
        since = None if body.since is None else parse_since(body.since)
        return 200, refresher.incremental(name, since, body.version, settings.budget_s, body.max_chunks)
    if isinstance(body, UsersBody):
        return 200, refresher.users(name, check_user_ids(body.user_ids, settings.users_max), body.version)
    if isinstance(body, InvalidateBody):
        if body.user_ids is not None:
            return 200, admin.invalidate_users(name, check_user_ids(body.user_ids, settings.users_max),
                                                   body.version)
        if body.version is None:
            raise InvalidBody("invalidate needs user_ids, or a version to drop whole")
        return 200, admin.drop_version(name, body.version, body.cursor, body.force, settings.budget_s)
    if isinstance(body, SwitchBody):
        if body.version is None:
            raise InvalidBody("switch needs the version to serve")
        return 200, admin.switch(name, body.version, body.force)
    return 200, admin.stats(name)
