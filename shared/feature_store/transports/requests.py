"""Request models of the feature read edges, and the one mapping of a pydantic error to a 400.

The models are the source of the request schemas in docs/openapi.yaml (transports/contract.py
writes them there; tests/functions/test_openapi_contract.py holds the two equal). Every model is
strict (no coercion: ``"1"`` is not 1, ``"yes"`` is not true) and forbids unknown fields.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from feature_store.domain.catalog import CATALOG
from feature_store.errors import InvalidBody, InvalidParameter, InvalidUserId

USER_ID_MAX = 64
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"  # feature and feature-set names
VERSION_MAX = 999_999
FEATURES_MAX = 64  # names in one selection: more than the catalog holds
ECHO_MAX = 40  # characters of a caller's input an error message repeats

# Letters, digits and a few separators; no spaces, quotes, control characters or SQL syntax.
_USER_ID = re.compile(USER_ID_PATTERN.strip("^$"))
_VERSION_TEXT = re.compile(r"[0-9]{1,7}")  # ASCII only: "\u00b2".isdigit() and int("\u0661") both pass
# Every feature name of every catalog version, in catalog order: what a selection may name. A name
# the chosen version lacks is 400 unknown_feature (the served version is known only at run time).
FEATURE_NAMES = tuple(dict.fromkeys(f.name for _, fs in sorted(CATALOG.items()) for f in fs.features))



def _integral(value: Any) -> Any:
    """1.0 as 1: JSON Schema's integer is any number without a fractional part; "1" and true stay refused."""
    return int(value) if type(value) is float and value.is_integer() else value


# Put after an int's bounds (Annotated[int, Field(ge=...), INTEGRAL]), or the schema loses them.
INTEGRAL = BeforeValidator(_integral)
UserId = Annotated[str, StringConstraints(min_length=1, max_length=USER_ID_MAX, pattern=USER_ID_PATTERN)]
FeatureName = Annotated[str, StringConstraints(pattern=NAME_PATTERN),
                        WithJsonSchema({"type": "string", "enum": list(FEATURE_NAMES)})]
FeatureSetName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Version = Annotated[int, Field(ge=1, le=VERSION_MAX), INTEGRAL]
FeatureList = Annotated[list[FeatureName], Field(min_length=1, max_length=FEATURES_MAX)]


def shown(value: object) -> str:
    """A caller's input as an error message quotes it: ``repr``, cut to ECHO_MAX characters."""
    text = value if isinstance(value, str) else repr(value)
    return repr(text) if len(text) <= ECHO_MAX else repr(text[:ECHO_MAX]) + f"... ({len(text)} characters)"


def _omit_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class _NoNulls(BaseModel):
    """Optional fields that may be left out but are never null (the document says so)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                if value is None and name in cls.model_fields:
                    raise ValueError(f"{name} may be left out but not null")
        return data


class BatchRequest(_NoNulls):
    """The ids to read, at most the configured batch size, and optionally which features of which version."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_ids: list[UserId] = Field(min_length=1, description=(
        "At most FS_SERVING_BATCH_MAX ids (1,000 by default; more is 400 batch_too_large). Duplicates are "
        "looked up once and answered at each position."))
    features: FeatureList | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_omit_default, description="A subset of the feature set's features (default: all).")
    feature_set: FeatureSetName | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_omit_default,
        description="Default: the served feature set (FS_SERVING_FEATURE_SET, credit_decision).")
    version: Version | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_omit_default, description="Default: the version the feature set serves.")


class ReadQuery(BaseModel):
    """Query parameters of ``GET /api/v1/features/user/{user_id}``, each optional and given at most once."""

    model_config = ConfigDict(extra="forbid", strict=True)

    features: FeatureList | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_omit_default,
        description="Comma-separated feature names: a subset of the feature set's features (default: all).")
    feature_set: FeatureSetName | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_omit_default,
        description="Default: the served feature set (FS_SERVING_FEATURE_SET, credit_decision).")
    version: Version | SkipJsonSchema[None] = Field(
        None, json_schema_extra=_omit_default, description="Default: the version the feature set serves.")

    @classmethod
    def parse(cls, args: dict[str, str]) -> ReadQuery:
        """The model of a query string's (single) values; 400 ``invalid_parameter`` naming the bad one."""
        values: dict[str, Any] = dict(args)
        if "features" in values:
            values["features"] = values["features"].split(",")
        if "version" in values:
            text = values["version"]
            if not _VERSION_TEXT.fullmatch(text):
                raise InvalidParameter(f"version must be a whole number from 1 to {VERSION_MAX}, got {shown(text)}")
            values["version"] = int(text)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise InvalidParameter(_where(tuple(exc.errors()[0]["loc"])) + ": " + exc.errors()[0]["msg"]) from None


def check_user_id(value: object, where: str = "user_id") -> str:
    """The id itself, or InvalidUserId saying exactly what is wrong with it."""
    if not isinstance(value, str):
        raise InvalidUserId(f"{where} must be a string")
    if value == "":
        raise InvalidUserId(f"{where} is empty")
    if len(value) > USER_ID_MAX:
        raise InvalidUserId(f"{where} is {len(value)} characters long; the limit is {USER_ID_MAX}")
    if not _USER_ID.fullmatch(value):
        raise InvalidUserId(f"{where} may hold only letters, digits and _ . : @ - "
                            "(starting with a letter or digit)")
    return value


# Steps of pydantic's own validators that it puts in an error's location after the field's name.
_VALIDATOR_STEP = re.compile(r"(function-(before|after|plain|wrap)|list|tuple|set|union|nullable|lax-or-strict"
                             r"|json-or-python|constrained-[a-z]+|[a-z]+-union)(\[.*\])?")


def _where(loc: tuple[int | str, ...]) -> str:
    """An error's location as the caller wrote it: ``features[0]``, ``version`` (never pydantic's steps)."""
    loc = tuple(p for i, p in enumerate(loc) if not (i and isinstance(p, str) and _VALIDATOR_STEP.fullmatch(p)))
    parts = [f"[{p}]" if isinstance(p, int) else (p if len(p) <= ECHO_MAX else shown(p)) for p in loc]
    return "".join(p if p.startswith("[") or i == 0 else "." + p for i, p in enumerate(parts)) or "body"


_ID_ERRORS = ("string_type", "string_pattern_mismatch", "string_too_short", "string_too_long")


def invalid_body(exc: ValidationError, user_id_fields: tuple[str, ...] = ()) -> InvalidBody | InvalidUserId:
    """The 400 of a body that failed its model: the first problem, named by its field.

    A value in one of ``user_id_fields`` that is not a string or breaks a user id's constraints is
    ``invalid_user_id`` with the sentence ``check_user_id`` gives it; a body that is not JSON says so.
    """
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    if first["type"] == "json_invalid":
        return InvalidBody("the body is not valid JSON")
    if first["type"] in ("union_tag_not_found", "union_tag_invalid"):
        ctx = first.get("ctx", {})
        name, expected = ctx.get("discriminator", "").strip("'"), ctx.get("expected_tags", "")
        if first["type"] == "union_tag_not_found":
            return InvalidBody(f"{name} is required: one of {expected}")
        return InvalidBody(f"{name} must be one of {expected}; got {shown(ctx.get('tag'))}")
    if loc and loc[0] in user_id_fields and first["type"] in _ID_ERRORS:
        try:
            check_user_id(first["input"], _where(loc))
        except InvalidUserId as bad:
            return bad
    if not loc and first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        return InvalidBody("the body must be a JSON object")
    return InvalidBody(f"{_where(loc)}: {first['msg'].removeprefix('Value error, ')}")
