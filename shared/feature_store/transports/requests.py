"""Request models of the HTTP edges: parse and validate, nothing else."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from feature_store.errors import InvalidUserId

USER_ID_MAX = 64
# Letters, digits and a few separators; no spaces, quotes, control characters or SQL syntax.
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
_FEATURE = re.compile(r"[a-z][a-z0-9_]{0,63}")


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


def _feature_name(value: str) -> str:
    if not _FEATURE.fullmatch(value):
        raise ValueError("feature names are lowercase snake_case")
    return value


FeatureName = Annotated[str, AfterValidator(_feature_name)]


class BatchRequest(BaseModel):
    """Body of ``POST /api/v1/features/batch``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_ids: list[str] = Field(min_length=1)
    features: list[FeatureName] | None = Field(default=None, min_length=1)
    feature_set: str = "credit_decision"
    version: int | None = Field(default=None, ge=1)


def parse_feature_list(text: str | None) -> list[str] | None:
    """``a,b`` from a query string; None when absent."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None
