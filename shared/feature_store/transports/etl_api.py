"""Handler of the run_etl function: one ETL step per POST, as workflows/etl.yaml calls them.

``POST /`` with one of ``{"step": "export", "run_id"?, "full"?}``, ``{"step": "snapshot", "run_id",
"date"?}``, ``{"step": "record", "run_id", "status", "error"?, "steps"?}`` or ``{"step": "training",
"labels": [...], "destination"?, "version"?}`` (a point-in-time training set of labels sent inline,
answered with its rows: feature_store_client's get_historical_features). Export answers
``done: false`` when its time budget ran out (call it again with the same run_id); a dependency
outage is a 503 the workflow retries, anything else fails the run. The body is validated strictly
from its JSON text: ``"full": "yes"`` is refused, not read as true, and a date is an ISO 8601 string.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from feature_store.transports.http import Endpoint, Incoming, body_bytes
from feature_store.transports.requests import invalid_body
from feature_store.wiring import services

RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ExportStep(_Step):
    """Export what changed since the last run (a new run when run_id is null or left out)."""

    step: Literal["export"]
    run_id: RunId | None = None
    full: bool = False  # ignore the watermarks and re-export everything


class SnapshotStep(_Step):
    """Snapshot the features of every user as of the end of a UTC day."""

    step: Literal["snapshot"]
    run_id: RunId
    date: dt.date | None = None  # default: yesterday


class RecordStep(_Step):
    """Record how the run ended."""

    step: Literal["record"]
    run_id: RunId
    status: Literal["succeeded", "failed"]
    error: str | None = None  # kept to its first 4,000 characters
    steps: dict[str, Any] | None = None  # what each step answered


TRAINING_LABELS_MAX = 10_000
# A table of the offline store's dataset whose name says what it is (never one of the store's own tables).
TrainingTable = Annotated[str, Field(pattern=r"^training_[A-Za-z0-9_]{1,1000}$")]


class Label(_Step):
    """One labelled decision: who, when (ISO 8601; no zone means UTC) and its outcome."""

    user_id: Annotated[str, Field(min_length=1, max_length=64)]
    decision_time: Annotated[str, Field(min_length=1, max_length=64)]
    label: str | int | float


class TrainingStep(_Step):
    """Build a point-in-time training set from labels sent inline, and answer its rows."""

    step: Literal["training"]
    labels: list[Label] = Field(min_length=1, max_length=TRAINING_LABELS_MAX, description=(
        "At most 10,000 labels in one request; build larger sets from a table with fs-training."))
    destination: TrainingTable | None = None  # default: a new table training_<time>_<random> of the dataset
    version: Annotated[int, Field(ge=1, le=999_999)] | None = None  # default: the newest catalog version


# The body of POST /: one model per step (the document's schema of it).
EtlRequest = Annotated[ExportStep | SnapshotStep | RecordStep | TrainingStep, Field(discriminator="step")]
_BODY: TypeAdapter[ExportStep | SnapshotStep | RecordStep | TrainingStep] = TypeAdapter(EtlRequest)


def run_step(request: Incoming, match: re.Match[str]) -> tuple[int, dict[str, Any]]:
    """``POST`` one step; the answer is what the step did (JSON)."""
    try:
        # From the JSON text, strict: a date is an ISO 8601 string, a boolean is true or false.
        body = _BODY.validate_json(body_bytes(request))
    except ValidationError as exc:
        raise invalid_body(exc) from None
    etl = services().etl
    if isinstance(body, ExportStep):
        return 200, etl.export(body.run_id, full=body.full)
    if isinstance(body, SnapshotStep):
        return 200, etl.snapshot(body.run_id, body.date)
    if isinstance(body, TrainingStep):
        destination = body.destination or f"training_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}_{secrets.token_hex(3)}"
        report = services().training.from_records([label.model_dump() for label in body.labels], destination,
                                                  body.version, with_rows=True)
        return 200, {"step": "training", **report}
    return 200, etl.record(body.run_id, body.status, body.steps, body.error)


# "/" is the function's root (its run.app URL); "/run_etl" the same root on its cloudfunctions.net URL.
RUN_STEP = Endpoint(re.compile(r"/(?:run_etl)?"), ("POST",), run_step)
