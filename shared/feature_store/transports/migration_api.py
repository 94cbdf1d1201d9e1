"""Handler of the run_migration function: one phase of the migration per POST (workflows/migration.yaml).

``POST {"phase": ..., ...}``, one strict model per phase (below). Long phases answer ``"done": false``
when their time budget ran out (call again with the same run_id); a refusal is a 409 whose code names
it (``not_verified``, ``shift_incomplete``, ``replication_lag_not_zero``, ..., and
``migration_not_configured`` where no target is set); a dependency outage is a 503 the workflow retries.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from feature_store.errors import Conflict
from feature_store.migration_wiring import configured, migration_for
from feature_store.transports.etl_api import RunId
from feature_store.transports.http import Endpoint, Incoming, body_bytes
from feature_store.transports.requests import invalid_body
from feature_store.wiring import services


class _Phase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Budget = Annotated[float, Field(gt=0, le=3600)]  # this call's share of a long phase (at most the function's own)
Percent = Annotated[float, Field(ge=0, le=100)]


class PreparePhase(_Phase):
    """Target schema, replication direction, compatibility report."""

    phase: Literal["prepare"]


class BackfillPhase(_Phase):
    """Copy a consistent snapshot of the source in keyset chunks (resumable)."""

    phase: Literal["backfill"]
    budget_s: Budget | None = None


class VerifyPhase(_Phase):
    """Chunked checksums on both sides; recheck, then repair what still differs."""

    phase: Literal["verify"]
    run_id: RunId
    budget_s: Budget | None = None


class ShiftPhase(_Phase):
    """Serve ``percent`` of users from the target, and watch the guard for ``hold_s``."""

    phase: Literal["shift"]
    percent: Percent
    hold_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0
    budget_s: Budget | None = None


class CutoverPhase(_Phase):
    """Lag zero, then the target is the source of truth and replication runs back to the source."""

    phase: Literal["cutover"]
    run_id: RunId
    budget_s: Budget | None = None


class RollbackPhase(_Phase):
    """Back to ``to_percent`` of reads from the target (0: the source serves everything again)."""

    phase: Literal["rollback"]
    run_id: RunId
    to_percent: Percent = 0.0
    budget_s: Budget | None = None


class SimplePhase(_Phase):
    """``replication``: its progress and lag; ``abandon``: stop and forget the migration; ``status``: where it is."""

    phase: Literal["replication", "abandon", "status"]


class RecordPhase(_Phase):
    """Record how the run ended (or that it is running)."""

    phase: Literal["record"]
    run_id: RunId
    status: Literal["running", "succeeded", "failed"]
    error: str | None = None  # kept to its first 4,000 characters
    steps: dict[str, Any] | None = None  # what each phase answered


Phases = (PreparePhase | BackfillPhase | VerifyPhase | ShiftPhase | CutoverPhase | RollbackPhase | SimplePhase
          | RecordPhase)
# The body of POST /: one model per phase (the document's schema of it).
MigrationRequest = Annotated[Phases, Field(discriminator="phase")]
_BODY: TypeAdapter[Phases] = TypeAdapter(MigrationRequest)


def run_phase(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST`` one phase; the answer is what the phase did (JSON)."""
    try:
        # From the JSON text, strict: a percentage is a number, not "50".
        body = _BODY.validate_json(body_bytes(request))
    except ValidationError as exc:
        raise invalid_body(exc) from None
    svc = services()
    if not configured(svc):
        raise Conflict("this deployment has no migration target (FS_MIGRATION_TARGET_HOST is not set)",
                       code="migration_not_configured")
    phases = migration_for(svc).phases
    # A call never runs longer than the function's own budget, whatever the body asks.
    budget = getattr(body, "budget_s", None)
    budget = None if budget is None else min(budget, phases.config.step_budget_s)
    match body:
        case PreparePhase():
            answer = phases.prepare()
        case BackfillPhase():
            answer = phases.backfill(budget)
        case VerifyPhase():
            answer = phases.verify(body.run_id, budget)
        case ShiftPhase():
            answer = phases.shift(body.percent, body.hold_s, budget)
        case CutoverPhase():
            answer = phases.cutover(body.run_id, budget)
        case RollbackPhase():
            answer = phases.rollback(body.run_id, body.to_percent, budget)
        case RecordPhase():
            answer = phases.record(body.run_id, body.status, body.steps, body.error)
        case SimplePhase(phase="replication"):
            answer = phases.replication()
        case SimplePhase(phase="abandon"):
            answer = phases.abandon()
        case _:
            answer = phases.status()
    return 200, {"phase": body.phase, **answer}


# "/" is the function's root (its run.app URL); "/run_migration" the same root on its cloudfunctions.net URL.
RUN_PHASE = Endpoint(re.compile(r"/(?:run_migration)?"), ("POST",), run_phase)
