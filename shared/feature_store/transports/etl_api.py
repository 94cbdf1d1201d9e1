"""Handler of the run_etl function: one ETL step per POST, as workflows/etl.yaml calls them.

``POST / {"step": "export" | "snapshot" | "record", "run_id"?, "date"?, "full"?, "status"?, "error"?,
"steps"?}``. Export answers ``done: false`` when its time budget ran out (call it again with the
same run_id); a dependency outage is a 503 the workflow retries, anything else fails the run.
The body is validated strictly from its JSON text: ``"full": "yes"`` is refused, not read as true.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feature_store.transports.http import Endpoint, body_bytes
from feature_store.transports.requests import invalid_body
from feature_store.wiring import services

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"


class EtlRequest(BaseModel):
    """Body of a run_etl call."""

    model_config = ConfigDict(extra="forbid", strict=True)

    step: Literal["export", "snapshot", "record"]
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    date: dt.date | None = None  # snapshot: the UTC day (default: yesterday)
    full: bool = False  # export: ignore the watermarks and re-export everything
    status: Literal["succeeded", "failed"] | None = None  # record
    error: str | None = None  # record: kept to its first 4,000 characters
    steps: dict[str, Any] | None = None  # record: what each step answered

    @model_validator(mode="after")
    def _needs(self) -> EtlRequest:
        if self.step in ("snapshot", "record") and self.run_id is None:
            raise ValueError(f"step {self.step} needs the run_id that export returned")
        if self.step == "record" and self.status is None:
            raise ValueError("step record needs a status: succeeded or failed")
        return self


def run_step(request: flask.Request, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST`` one step; the answer is what the step did (JSON)."""
    try:
        # From the JSON text, strict: a date is an ISO 8601 string, a boolean is true or false.
        body = EtlRequest.model_validate_json(body_bytes(request))
    except ValidationError as exc:
        raise invalid_body(exc) from None
    etl = services().etl
    if body.step == "export":
        return 200, etl.export(body.run_id, full=body.full)
    assert body.run_id is not None  # checked by the model
    if body.step == "snapshot":
        return 200, etl.snapshot(body.run_id, body.date)
    assert body.status is not None
    return 200, etl.record(body.run_id, body.status, body.steps, body.error)


# "/" is the function's root (its run.app URL); "/run_etl" the same root on its cloudfunctions.net URL.
RUN_STEP = Endpoint(re.compile(r"/(?:run_etl)?"), ("POST",), run_step)
