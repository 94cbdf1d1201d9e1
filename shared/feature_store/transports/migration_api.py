"""Handler of the run_migration function: one phase of the migration per POST (workflows/migration.yaml).

``POST {"phase": ..., "run_id"?, "percent"?, "hold_s"?, "to_percent"?, "budget_s"?, "status"?, "error"?,
"steps"?}``. Long phases answer ``"done": false`` when their time budget ran out (call again with the same
run_id); a refusal is a 409 whose code names it (``not_verified``, ``shift_incomplete``,
``replication_lag_not_zero``, ...); a dependency outage is a 503 the workflow retries.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from feature_store.migration_wiring import migration_services
from feature_store.transports.etl_api import RunId
from feature_store.transports.http import Endpoint, body_bytes
from feature_store.transports.requests import invalid_body

Phase = Literal["prepare", "backfill", "verify", "replication", "shift", "cutover", "rollback", "abandon", "status",
                "record"]
_NEEDS_RUN = ("verify", "cutover", "rollback", "record")


class MigrationRequest(BaseModel):
    """Body of a run_migration call."""

    model_config = ConfigDict(extra="forbid", strict=True)

    phase: Phase
    run_id: RunId | None = None
    percent: float | None = Field(default=None, ge=0, le=100)  # shift: the step
    hold_s: float = Field(default=0.0, ge=0, le=86_400)  # shift: how long to watch the guard at this step
    to_percent: float = Field(default=0.0, ge=0, le=100)  # rollback
    budget_s: float | None = Field(default=None, gt=0, le=3600)  # this call's share of a long phase
    status: Literal["running", "succeeded", "failed"] | None = None  # record
    error: str | None = None  # record: kept to its first 4,000 characters
    steps: dict[str, Any] | None = None  # record: what each phase answered

    @model_validator(mode="after")
    def _needs(self) -> MigrationRequest:
        if self.phase in _NEEDS_RUN and self.run_id is None:
            raise ValueError(f"phase {self.phase} needs a run_id")
        if self.phase == "shift" and self.percent is None:
            raise ValueError("phase shift needs the percent to serve from the target")
        if self.phase == "record" and self.status is None:
            raise ValueError("phase record needs a status: running, succeeded or failed")
        return self


def run_phase(request: flask.Request, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST`` one phase; the answer is what the phase did (JSON)."""
    try:
        # From the JSON text, strict: a percentage is a number, not "50".
        body = MigrationRequest.model_validate_json(body_bytes(request))
    except ValidationError as exc:
        raise invalid_body(exc) from None
    phases = migration_services().phases
    run_id = body.run_id or ""
    answers = {
        "prepare": lambda: phases.prepare(),
        "backfill": lambda: phases.backfill(body.budget_s),
        "verify": lambda: phases.verify(run_id, body.budget_s),
        "replication": lambda: phases.replication(),
        "shift": lambda: phases.shift(body.percent or 0.0, body.hold_s, body.budget_s),
        "cutover": lambda: phases.cutover(run_id, body.budget_s),
        "rollback": lambda: phases.rollback(run_id, body.to_percent, body.budget_s),
        "abandon": lambda: phases.abandon(),
        "status": lambda: phases.status(),
        "record": lambda: phases.record(run_id, body.status or "running", body.steps, body.error),
    }
    return 200, {"phase": body.phase, **answers[body.phase]()}


# "/" is the function's root (its run.app URL); "/run_migration" the same root on its cloudfunctions.net URL.
RUN_PHASE = Endpoint(re.compile(r"/(?:run_migration)?"), ("POST",), run_phase)
