"""The phases of the migration, one call each (run_migration; workflows/migration.yaml calls them in order).

    prepare    target schema (the CockroachDB form, services/migration/schema.py), bookkeeping tables,
               replication switched on (direction forward)
    backfill   copy the source in keyset chunks (call again while "done" is false)
    verify     chunked checksums, rechecks, repair (call again while "done" is false; "ok" says equal)
    replication  the replication's progress and lag
    shift      serve a percentage of users from the target and hold it under the guard
    cutover    lag zero (replication quiet, strict verification), then the target is the source of truth
               and the replication runs backwards
    rollback   back to a lower percentage; after the cutover, back to the source as the truth (reverse
               replication drained and verified first), so nothing written to the target is lost
    abandon    stop replicating before the cutover (the target keeps what it has; prepare starts again)
    status     everything above as it stands; record: close a workflow run

Every phase is idempotent and keeps its progress in the target (sql/migration/state.sql), so calling it
again resumes it; a refusal is a Conflict with a code the workflow names its failure after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from feature_store.errors import Conflict
from feature_store.logs import get_logger
from feature_store.services.migration.backfill import Backfill
from feature_store.services.migration.schema import target_schema
from feature_store.services.migration.shift import Shifter
from feature_store.services.migration.verify import Side, Verifier
from feature_store.services.migrations import migrate
from feature_store.stores.dialect import format_watermark
from feature_store.stores.migration_replica import ReplicaStore
from feature_store.stores.migration_routing import RoutingStore
from feature_store.stores.migration_state import StateStore, ensure_replica_tables, ensure_state_tables

log = get_logger(__name__)

BACKFILL_JOB = "backfill"
CUTOVER_ATTEMPTS = 3


@dataclass(frozen=True)
class PhaseConfig:
    step_budget_s: float
    chunk_rows: int
    backfill_workers: int
    recheck_attempts: int
    recheck_delay_s: float
    cutover_quiet_s: float
    settle_s: float  # how long instances may route by an older pointer (their cache time, with a margin)
    verify_workers: int = 2  # chunks a verification compares at once


class Phases:
    """Each phase of the migration as one idempotent call."""

    def __init__(self, source: Side, target: Side, state: StateStore, forward: ReplicaStore, reverse: ReplicaStore,
                 shifter: Shifter, routing: RoutingStore, config: PhaseConfig,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.source, self.target = source, target
        self.state = state
        self.forward, self.reverse = forward, reverse
        self.shifter = shifter
        self.routing = routing
        self.config = config
        self._clock, self._sleep = clock, sleep

    def _position(self, side: Side) -> int:
        with side.pool.connection() as conn:
            if side.dialect.watermark_in_transaction:
                conn.execute("BEGIN")
            mark = side.dialect.watermark(conn.run(side.dialect.watermark_sql)[0][0])
            if side.dialect.watermark_in_transaction:
                conn.execute("COMMIT")
        return mark

    def _must(self) -> Any:
        state = self.state.read()
        if state is None:
            raise Conflict("the target has not been prepared: run the prepare phase first",
                           code="migration_not_prepared")
        return state

    def _verifier(self, strict: bool, backwards: bool = False) -> Verifier:
        sender, receiver = (self.target, self.source) if backwards else (self.source, self.target)
        return Verifier(sender, receiver, self.reverse if backwards else self.forward, self.state,
                        self.config.chunk_rows, self.config.recheck_attempts, self.config.recheck_delay_s,
                        strict=strict, workers=self.config.verify_workers,
                        direction="reverse" if backwards else "forward", sleep=self._sleep)

    # --- prepare, backfill, verify ------------------------------------------------------------

    def prepare(self) -> dict[str, Any]:
        """Apply the target schema and the bookkeeping tables; switch the replication on."""
        schema = target_schema(self.target.dialect.name)
        with self.target.pool.connection() as conn:
            applied = migrate(conn, schema.migrations)
            ensure_state_tables(conn)
            ensure_replica_tables(conn)
        with self.state.changing() as state:
            if state.direction == "none" and state.truth == "source":
                position = self._position(self.source)
                state.direction = "forward"
                state.doc["replication"] = {"started_at": self._clock(), "start_position": position,
                                            "start_position_text": format_watermark(self.source.dialect, position)}
        route = self.shifter.sync()
        log.info("migration prepared", extra={"fields": {"applied": applied.applied, "direction": state.direction}})
        report = [{"migration": d.migration, "subject": d.subject, "postgresql": d.postgresql,
                   "cockroachdb": d.cockroachdb, "why": d.reason} for d in schema.differences]
        return {"done": True, "applied": applied.applied, "already_applied": applied.already,
                "differences": len(report), "report": report, "direction": state.direction, "percent": route.percent}

    def backfill(self, budget_s: float | None = None) -> dict[str, Any]:
        state = self._must()
        if state.direction != "forward" or state.truth != "source":
            raise Conflict(f"the backfill copies source -> target while replicating forward; the migration is "
                           f"{state.direction} with the {state.truth} as the truth", code="backfill_not_allowed")
        started = float(state.doc["replication"]["started_at"])
        # Every instance of replicate_changes re-reads the state before skipping a change; waiting out
        # the settle time as well costs a second once and keeps the order beyond doubt.
        self._sleep(max(0.0, started + self.config.settle_s - self._clock()))
        if "backfill" not in state.doc:
            position = self._position(self.source)
            self.state.update_doc(lambda doc: doc.setdefault("backfill", {
                "first_snapshot_after": position, "first_snapshot_after_text": format_watermark(
                    self.source.dialect, position), "replication_started_before": position >= int(
                    doc["replication"]["start_position"]), "started_at": self._clock()}))
        report = Backfill(self.source.pool, self.target.pool, self.target.dialect, self.state,
                          self.config.chunk_rows, self.config.backfill_workers).run(
                              BACKFILL_JOB, budget_s or self.config.step_budget_s)
        answer = report.to_dict()
        if report.done:
            self.state.update_doc(lambda doc: doc["backfill"].update(
                done_at=self._clock(), rows=sum(t.rows_total for t in report.tables.values())))
        answer["snapshot"] = (self.state.read() or state).doc.get("backfill", {})
        return answer

    def verify(self, run_id: str, budget_s: float | None = None) -> dict[str, Any]:
        """Compare source and target (target and source after the cutover); the result is recorded in the
        state when done: tables with rows and checksums on each side, chunks repaired or still different,
        and the duration since the job's first call."""
        state = self._must()
        job = f"verify:{run_id}"
        started = state.doc.get("verify_started", {}).get(job)
        if started is None:
            started = self._clock()
            self.state.update_doc(lambda doc: doc.setdefault("verify_started", {}).__setitem__(job, started))
        backwards = state.truth == "target"
        answer = self._verifier(strict=False, backwards=backwards).run(job, budget_s or self.config.step_budget_s)
        if answer["done"]:
            answer["duration_s"] = round(self._clock() - float(started), 3)
            self.state.update_doc(lambda doc: doc.__setitem__("verify", {
                "job": job, "ok": answer["ok"], "at": self._clock(), "duration_s": answer["duration_s"],
                "tables": answer["tables"], "different": len(answer["different"]),
                "repaired": len(answer["repaired"])}))
        return answer

    # --- replication --------------------------------------------------------------------------

    def replication(self) -> dict[str, Any]:
        """The replication's direction, and what each direction has applied, how recently, with which lag."""
        state = self._must()
        progress = {}
        for side, direction in ((self.target, "forward"), (self.source, "reverse")):
            try:
                progress[direction] = self._progress(side, direction)
            except Exception as exc:  # the source has no progress table before the cutover
                progress[direction] = {"error": type(exc).__name__}
        return {"direction": state.direction, "truth": state.truth, **progress}

    def _progress(self, side: Side, direction: str) -> dict[str, Any]:
        with side.pool.connection() as conn:
            rows = conn.run("SELECT applied, stale, batches, CAST(last_position AS TEXT), "
                            "extract(epoch FROM clock_timestamp() - last_applied_at), last_lag_ms "
                            "FROM fs_replication_progress WHERE direction = :d", d=direction)
        if not rows:
            return {"applied": 0, "stale": 0, "batches": 0, "idle_s": None, "last_lag_ms": None}
        applied, stale, batches, position, idle, lag = rows[0]
        return {"applied": int(applied), "stale": int(stale), "batches": int(batches), "last_position": position,
                "idle_s": None if idle is None else round(float(idle), 3),
                "last_lag_ms": None if lag is None else round(float(lag), 1)}

    # --- traffic shift ------------------------------------------------------------------------

    def shift(self, percent: float, hold_s: float, budget_s: float | None = None) -> dict[str, Any]:
        state = self._must()
        if state.direction != "forward":
            raise Conflict("reads move to the target only while it is replicated forward", code="shift_not_allowed")
        if percent > 0 and not state.doc.get("verify", {}).get("ok"):
            raise Conflict("no verification has found the target equal to the source yet: run verify first",
                           code="not_verified")
        current = self.routing.read()
        if percent < current.percent and not current.tripped:
            # A re-run resumes: a step below where the shift already is has been held before.
            return {"percent": percent, "done": True, "tripped": False, "skipped": f"already at {current.percent:g}"}
        step = self.shifter.step(percent)
        held = self.shifter.hold(hold_s, min(budget_s or self.config.step_budget_s, hold_s + 5))
        return {**step, **held}

    # --- cutover and the way back -------------------------------------------------------------

    def cutover(self, run_id: str, budget_s: float | None = None) -> dict[str, Any]:
        """Lag zero, then the target becomes the source of truth and the replication runs backwards."""
        state = self._must()
        if state.truth == "target":
            return {"done": True, "truth": "target", "cutover": state.doc.get("cutover", {})}
        route = self.routing.read()
        if route.percent < 100 or route.tripped:
            raise Conflict(f"the cutover needs every read on the target first (percent {route.percent:g})",
                           code="shift_incomplete")
        return self._drain_and_flip(run_id, "forward", budget_s or self.config.step_budget_s,
                                    lambda: self._flip_to_target(run_id))

    def rollback(self, run_id: str, to_percent: float = 0.0, budget_s: float | None = None) -> dict[str, Any]:
        """Back to ``to_percent``; after the cutover, back to the source as the truth, losing nothing."""
        state = self._must()
        if state.truth == "source":
            dropped = self.shifter.back(to_percent, reason=f"rollback by run {run_id}")
            return {"done": True, "truth": "source", "percent": to_percent, "dropped_vectors": dropped}
        return self._drain_and_flip(run_id, "reverse", budget_s or self.config.step_budget_s,
                                    lambda: self._flip_to_source(run_id, to_percent))

    def _drain_and_flip(self, run_id: str, direction: str, budget_s: float,
                        flip: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Wait for the replication to be quiet, verify strictly, check it stayed quiet, then ``flip``."""
        receiver = self.target if direction == "forward" else self.source
        key = f"drain_{direction}"
        doc = (self.state.read() or self._must()).doc.get(key, {})
        if doc.get("run_id") != run_id:
            doc = {"run_id": run_id, "attempt": 0}
        before = self._progress(receiver, direction)
        if before["idle_s"] is not None and before["idle_s"] < self.config.cutover_quiet_s:
            return {"done": False, "waiting": "replication_busy", "replication": before}
        doc.setdefault("applied", before["applied"] + before["stale"])
        job = f"drain:{direction}:{run_id}:{doc['attempt']}"
        self.state.update_doc(lambda d: d.__setitem__(key, doc))
        answer = self._verifier(strict=True, backwards=direction == "reverse").run(job, budget_s)
        if not answer["done"]:
            return {"done": False, "waiting": "verification", "verify": answer}
        after = self._progress(receiver, direction)
        if after["applied"] + after["stale"] != doc["applied"] or not answer["ok"]:
            doc["attempt"] += 1
            doc.pop("applied")
            self.state.update_doc(lambda d: d.__setitem__(key, doc))
            if doc["attempt"] >= CUTOVER_ATTEMPTS:
                raise Conflict(f"replication lag is not zero: {direction} changes kept arriving or rows kept "
                               f"differing over {CUTOVER_ATTEMPTS} strict verifications; stop the writes to the "
                               "database being left, then run again", code="replication_lag_not_zero")
            return {"done": False, "waiting": "changes_arrived_during_verification", "verify": answer}
        result = flip()
        return {"done": True, **result, "verify": {k: answer[k] for k in ("job", "ok", "tables")}}

    def _flip_to_target(self, run_id: str) -> dict[str, Any]:
        with self.source.pool.connection() as conn:
            ensure_replica_tables(conn)  # reverse replication writes its positions in the source
        position = self._position(self.target)
        with self.state.changing() as state:
            state.direction, state.truth, state.percent = "reverse", "target", 100.0
            state.doc["cutover"] = {"run_id": run_id, "at": self._clock(), "target_position": position}
        self.routing.write(100.0, "target", 100.0)
        log.warning("cutover: the target is the source of truth", extra={"fields": {"run_id": run_id}})
        return {"truth": "target", "direction": "reverse", "percent": 100.0}

    def _flip_to_source(self, run_id: str, to_percent: float) -> dict[str, Any]:
        position = self._position(self.source)
        with self.state.changing() as state:
            state.direction, state.truth, state.percent = "forward", "source", to_percent
            state.doc["rolled_back"] = {"run_id": run_id, "at": self._clock(), "source_position": position,
                                        "to_percent": to_percent}
            state.doc["shift"] = {**state.doc.get("shift", {}), "percent": to_percent, "started_at": self._clock()}
        self.routing.write(to_percent, "source", to_percent)
        self._sleep(self.config.settle_s)
        dropped = self.shifter.drop_vectors(to_percent, 100.0)
        log.warning("rolled back: the source is the source of truth again", extra={"fields": {
            "run_id": run_id, "percent": to_percent, "dropped_vectors": dropped}})
        return {"truth": "source", "direction": "forward", "percent": to_percent, "dropped_vectors": dropped}

    def abandon(self) -> dict[str, Any]:
        """Stop before the cutover: reads back on the source, replication off; the target keeps its rows."""
        state = self._must()
        if state.truth == "target":
            raise Conflict("after the cutover, go back with rollback (it drains the reverse replication first)",
                           code="migration_cut_over")
        dropped = self.shifter.back(0.0, reason="abandoned") if state.percent > 0 else 0
        with self.state.changing() as changing:
            changing.direction = "none"
            changing.doc["abandoned_at"] = self._clock()
        return {"done": True, "direction": "none", "dropped_vectors": dropped}

    # --- status and runs ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self._must()
        route = self.shifter.sync()
        return {"direction": state.direction, "truth": state.truth, "percent": state.percent,
                "route": {"percent": route.percent, "truth": route.truth, "generation": route.generation,
                          "tripped": route.tripped, "reason": route.reason},
                "replication": self.replication(), "doc": state.doc}

    def record(self, run_id: str, status: str, steps: Mapping[str, Any] | None, error: str | None) -> dict[str, Any]:
        self.state.ensure_bookkeeping()
        previous = self.state.run(run_id)
        merged = {**(previous or {}).get("steps", {}), **(steps or {})}
        phase = next(reversed(merged), None) if merged else None
        self.state.save_run(run_id, status, phase, merged, None if error is None else error[:4000],
                            finished=status in ("succeeded", "failed"))
        return {"run_id": run_id, "status": status}
