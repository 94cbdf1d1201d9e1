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
Bodies are strict (no coercion) and forbid unknown fields; ``RefreshRequest`` is their union by mode,
the schema docs/openapi.yaml carries.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feature_store.errors import BatchTooLarge, InvalidBody, InvalidParameter
from feature_store.transports.http import Endpoint, Incoming, json_body
from feature_store.transports.requests import (
    INTEGRAL,
    FeatureSetName,
    UserId,
    Version,
    check_user_id,
    invalid_body,
    shown,
)
from feature_store.wiring import services

MODES = ("full", "incremental", "users", "invalidate", "switch", "stats")
RUN_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_.:-]{0,63}$"
_USER_FIELDS = ("user_ids", "from_user", "to_user")
Chunks = Annotated[int, Field(ge=1, le=2**31 - 1), INTEGRAL]
# Parsed by parse_since: 400 invalid_watermark, or watermark_in_future past the source's clock.
Since = Annotated[str, Field(max_length=64, json_schema_extra={"format": "date-time"})]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    feature_set: FeatureSetName | None = None
    version: Version | None = None


class FullBody(_Body):
    mode: Literal["full"]
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    from_user: UserId | None = None
    to_user: UserId | None = None
    shards: Annotated[int, Field(ge=1, le=256), INTEGRAL] = 1
    max_chunks: Chunks | None = None
    source: Literal["postgres", "bigquery"] = "postgres"


class IncrementalBody(_Body):
    mode: Literal["incremental"]
    since: Since | None = Field(None, description="ISO 8601; without an offset it is UTC; not in the future.")
    max_chunks: Chunks | None = None


class UsersBody(_Body):
    mode: Literal["users"]
    user_ids: list[UserId] = Field(min_length=1)


class InvalidateBody(_Body):
    """Drop the given users' vectors, or a whole version (a version, no user_ids)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["user_ids"], "properties": {"user_ids": {"type": "array"}}},
        {"required": ["version"], "properties": {"version": {"type": "integer"}}}]})

    mode: Literal["invalidate"]
    user_ids: list[UserId] | None = Field(None, min_length=1)
    cursor: Annotated[int, Field(ge=0, le=2**64 - 1), INTEGRAL] = 0  # a Redis SCAN cursor: unsigned 64-bit
    force: bool = False

    @model_validator(mode="after")
    def _needs_users_or_version(self) -> InvalidateBody:
        if self.user_ids is None and self.version is None:
            raise ValueError("invalidate needs user_ids, or a version to drop whole")
        return self


class SwitchBody(_Body):
    """Serve this version from now on."""

    mode: Literal["switch"]
    version: Version
    force: bool = False


class StatsBody(_Body):
    mode: Literal["stats"]


_MODELS: dict[str, type[_Body]] = {"full": FullBody, "incremental": IncrementalBody, "users": UsersBody,
                                   "invalidate": InvalidateBody, "switch": SwitchBody, "stats": StatsBody}
# The body of POST /: one model per mode (the document's schema of it).
RefreshRequest = Annotated[FullBody | IncrementalBody | UsersBody | InvalidateBody | SwitchBody | StatsBody,
                           Field(discriminator="mode")]


def parse_since(text: str) -> datetime:
    """An ISO 8601 instant (``Z`` or an offset; none means UTC), or 400 ``invalid_watermark``."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"since must be an ISO 8601 timestamp such as 2026-11-23T12:00:00Z, got {shown(text)}",
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
        raise InvalidParameter(f"unknown mode {shown(mode)}; modes: {', '.join(MODES)}", code="unknown_mode")
    try:
        return _MODELS[mode].model_validate(raw)
    except ValidationError as exc:
        raise invalid_body(exc, _USER_FIELDS) from None


def refresh(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST /`` with a mode body; see the module docstring."""
    svc = services()
    body = parse(json_body(request))
    settings = svc.settings.refresh
    name = body.feature_set or svc.settings.serving.feature_set
    refresher, admin = svc.refresher, svc.cache_admin
    if isinstance(body, FullBody):
        return 200, refresher.full(name, body.version, body.run_id, body.from_user, body.to_user, body.shards,
                                   settings.budget_s, body.max_chunks, source=body.source)
    if isinstance(body, IncrementalBody):
        since = None if body.since is None else parse_since(body.since)
        return 200, refresher.incremental(name, since, body.version, settings.budget_s, body.max_chunks)
    if isinstance(body, UsersBody):
        return 200, refresher.users(name, check_user_ids(body.user_ids, settings.users_max), body.version)
    if isinstance(body, InvalidateBody):
        if body.user_ids is not None:
            return 200, admin.invalidate_users(name, check_user_ids(body.user_ids, settings.users_max), body.version)
        assert body.version is not None  # checked by the model
        return 200, admin.drop_version(name, body.version, body.cursor, body.force, settings.budget_s)
    if isinstance(body, SwitchBody):
        return 200, admin.switch(name, body.version, body.force)
    return 200, admin.stats(name)


# "/" is the function's root (its run.app URL); "/refresh_cache" the same root on its cloudfunctions.net URL.
REFRESH = Endpoint(re.compile(r"/(?:refresh_cache)?"), ("POST",), refresh)
