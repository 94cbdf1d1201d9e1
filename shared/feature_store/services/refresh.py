"""Cache refresh: materialize feature vectors from the source of truth into Redis, in bulk.

Modes (functions/refresh_cache and fs-refresh share them):

- ``full``: every user (or an id range), chunk by chunk. A run has an id and a checkpoint per
  shard in Redis; an invocation works until its budget and says where to go on, so a workflow
  loops (or fans out over shards) and an interrupted run resumes. One full run per version at a
  time: the run holds a lock with an expiry, renewed at every chunk.
- ``incremental``: users whose source rows changed since a timestamp (by default where the last
  pass stopped), streamed through one database cursor.
- ``users``: an explicit list; ids that do not exist get a tombstone.
- ``invalidate``, ``switch``, ``stats``: services/cache_admin.py.

Every version of a feature set finishes its features from the same cached states (one layout,
domain/state.py), so a refresh writes each user once whichever version it names, and a full run
materializes every version. Every value is written compare-and-set on its source watermark, so a
refresh racing change data capture or the read path's write-back never replaces newer data with older.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from feature_store.domain.catalog import FeatureSet, get_feature_set
from feature_store.errors import BatchTooLarge, Conflict, DependencyUnavailable, InvalidParameter, NotFound
from feature_store.logs import get_logger
from feature_store.services.cache_admin import shared_versions
from feature_store.services.refresh_pipeline import Budget, ProgressSink, Tracker, pipelined
from feature_store.services.versions import ServedVersions
from feature_store.stores.bigquery_bulk import BigQueryBulkSource
from feature_store.stores.postgres_bulk import BulkSource, IdBatch, Vector
from feature_store.stores.redis_refresh import (
    INCREMENTAL,
    BulkWriter,
    FullRun,
    IncrementalRun,
    Materialized,
    RefreshState,
    Shard,
)

log = get_logger("feature_store.refresh")


@dataclass(frozen=True)
class RefreshConfig:
    """Tuning of the refresher (settings' refresh section and the online store's TTLs)."""

    chunk_users: int
    workers: int
    lock_ttl_s: int
    users_max: int
    incremental_overlap_s: int
    progress_every_s: float
    ttl_s: int
    tombstone_ttl_s: int


def new_run_id() -> str:
    """A run id that sorts by start time: ``20261123T152613Z-9df829``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class Refresher:
    """The refresh modes that compute states: full, incremental and users."""

    def __init__(self, source: BulkSource, writer: BulkWriter, state: RefreshState, versions: ServedVersions,
                 config: RefreshConfig, bigquery: Callable[[], BigQueryBulkSource] | None = None) -> None:
        self.source = source
        self.writer = writer
        self.state = state
        self.versions = versions
        self.config = config
        self._bigquery = bigquery  # built on first use: only "source": "bigquery" needs BigQuery

    def _offline(self) -> BigQueryBulkSource:
        if self._bigquery is None:
            raise InvalidParameter("this deployment has no BigQuery offline store to refresh from",
                                   code="source_unavailable")
        return self._bigquery()

    def _feature_set(self, name: str, version: int | None) -> FeatureSet:
        """The version named, else the served one (NotFound for an unknown set or version)."""
        return get_feature_set(name, version if version is not None else self.versions.served(name))

    @property
    def _ttl_ms(self) -> int:
        return self.config.ttl_s * 1000

    @property
    def _lock_ms(self) -> int:
        return self.config.lock_ttl_s * 1000

    def _write(self, batch: IdBatch) -> int:
        written = self.writer.put(batch.vectors, self._ttl_ms)
        if batch.missing:
            written += self.writer.tombstone(batch.missing, batch.watermark, self.config.tombstone_ttl_s * 1000)
        return written

    # --- full ---------------------------------------------------------------------------------

    def full(self, name: str, version: int | None = None, run_id: str | None = None,
             from_user: str | None = None, to_user: str | None = None, shards: int = 1,
             budget_s: float | None = None, max_chunks: int | None = None,
             sink: ProgressSink | None = None, source: str = "postgres") -> dict[str, Any]:
        """Start (or resume, given ``run_id``) a full run and work on it until done or out of budget.

        ``source`` "bigquery" computes states from the offline mirrors (stores/bigquery_bulk.py): a
        warm-up that only fills what Redis does not hold.
        """
        fs = self._feature_set(name, version)
        if run_id is None:
            run_id = self.start_full(name, fs.version, from_user, to_user, shards, source)
        run = self.state.load_full(run_id)
        if run is None:
            raise NotFound(f"no full refresh run {run_id!r} of {fs.name} (runs are kept "
                           f"{self.state.run_ttl_ms // 86_400_000} days once finished or replaced)", code="unknown_run")
        if run.finished_at is None:
            holder = self.state.take(self.state.lock_key("full"), run_id, self._lock_ms)
            if holder != run_id:
                raise Conflict(f"run {holder} now holds the full refresh lock of {fs.name}", code="refresh_in_progress")
        fields = {"mode": "full", "run_id": run_id, "feature_set": fs.name, "version": run.version}
        tracker = Tracker(fields, run.total, run.done, self.config.progress_every_s, sink)
        budget = Budget(budget_s, max_chunks)
        written = 0
        if run.finished_at is None:
            for shard, progress in enumerate(run.shards):
                if progress.finished or budget.exhausted():
                    continue
                written += self._shard(run_id, run, shard, budget, tracker)
            run = self.state.load_full(run_id) or run
        done = all(s.finished for s in run.shards)
        if done and run.finished_at is None:
            self._finish_full(fs, run_id, run, tracker)
        shards_done = sum(s.finished for s in run.shards)
        if not done:
            log.info("refresh step", extra={"fields": {"event": "refresh_step", **fields, **tracker.snapshot(),
                                                       "written": written, "shards_done": shards_done}})
        return {**fields, "done": done, "written": written, "progress": tracker.snapshot(),
                "shards": len(run.shards), "shards_done": shards_done,
                "next": None if done else {"mode": "full", "feature_set": fs.name, "version": run.version,
                                           "run_id": run_id}}

    def start_full(self, name: str, version: int | None = None, from_user: str | None = None,
                   to_user: str | None = None, shards: int = 1, source: str = "postgres") -> str:
        """Take the full-refresh lock for a new run and plan it; return its id (409 when taken)."""
        fs = self._feature_set(name, version)
        as_of = self._offline().mirrored_to() if source == "bigquery" else None
        run_id = new_run_id()
        holder = self.state.take(self.state.lock_key("full"), run_id, self._lock_ms)
        if holder != run_id:
            raise Conflict(f"a full refresh of {fs.name} is already running (run {holder}); resume it with its "
                           "run_id or wait for its lock to expire", code="refresh_in_progress")
        self._plan(fs, run_id, from_user or "", to_user, shards, as_of)
        replaced = self.state.replace_last_run("full", run_id)
        if replaced is not None:
            self.state.retire_run(replaced)  # when unfinished it was abandoned: its lock had expired
        return run_id

    def _plan(self, fs: FeatureSet, run_id: str, lo: str, hi: str | None, shards: int,
              as_of: datetime | None) -> FullRun:
        """Count the users and cut the key space into ``shards`` ranges of about equal size."""
        total = self.source.count(lo, hi)
        bounds: list[str] = [lo]
        step = max(1, -(-total // shards))
        while len(bounds) < shards:
            nxt = self.source.next_boundary(bounds[-1], step, hi)
            if nxt is None:
                break
            bounds.append(nxt)
        run = FullRun(feature_set=fs.name, version=fs.version, started_at=_iso(datetime.now(UTC)),
                      complete=lo == "" and hi is None, total=total, shards=[Shard(b, b) for b in bounds],
                      from_user=lo, to_user=hi, source="postgres" if as_of is None else "bigquery",
                      as_of=None if as_of is None else _iso(as_of))
        self.state.save_full(run_id, run)
        log.info("refresh started", extra={"fields": {"event": "refresh_started", "mode": "full", "run_id": run_id,
                                                      "feature_set": fs.name, "version": fs.version,
                                                      "total": total, "shards": len(bounds)}})
        return run

    def _shard(self, run_id: str, run: FullRun, shard: int, budget: Budget, tracker: Tracker) -> int:
        """Work on one shard while this invocation holds its lease; return how many values landed."""
        compute: Callable[[str, str | None], list[Vector]] = self.source.vectors_in_range
        if run.source == "bigquery":
            assert run.as_of is not None  # planned with the mirrors' instant
            compute = partial(self._offline().vectors_in_range, as_of=datetime.fromisoformat(run.as_of))
        token = secrets.token_hex(8)
        lease = self.state.lease_key(run_id, shard)
        if self.state.take(lease, token, self._lock_ms) != token:
            return 0  # another invocation is working on this shard
        fresh = self.state.load_full(run_id) or run
        if fresh.shards[shard].finished:
            self.state.release(lease, token)
            return 0
        end = fresh.shards[shard + 1].bound if shard + 1 < len(fresh.shards) else fresh.to_user
        written = 0
        try:
            for (hi, last), vectors in pipelined(self._range_jobs(fresh.shards[shard].next, end, budget, compute),
                                                 self.config.workers):
                n = self.writer.put(vectors, self._ttl_ms)
                written += n
                self.state.checkpoint(run_id, shard, None if last else hi or "", len(vectors), n)
                holder = self.state.take(self.state.lock_key("full"), run_id, self._lock_ms)
                if holder != run_id:
                    # Stalled past the lock's expiry and another run took over: stop, never run twice.
                    raise Conflict(f"run {run_id} lost the full refresh lock to run {holder}",
                                   code="refresh_in_progress")
                self.state.take(lease, token, self._lock_ms)
                tracker.advance(len(vectors))
        finally:
            # Best effort: the lease expires anyway, and an error here must not hide the one in flight.
            with contextlib.suppress(DependencyUnavailable):
                self.state.release(lease, token)
        return written

    def _range_jobs(self, lo: str, end: str | None, budget: Budget, compute: Callable[[str, str | None], list[Vector]],
                    ) -> Iterator[tuple[tuple[str | None, bool], Callable[[], list[Vector]]]]:
        """Chunks of ``chunk_users`` ids from ``lo`` to ``end``; boundaries always come from PostgreSQL's index."""
        cursor: str | None = lo
        while cursor is not None and budget.take():
            nxt = self.source.next_boundary(cursor, self.config.chunk_users, end)
            hi = nxt if nxt is not None else end
            yield (hi, nxt is None), partial(compute, cursor, hi)
            cursor = nxt

    def _finish_full(self, fs: FeatureSet, run_id: str, run: FullRun, tracker: Tracker) -> None:
        finished_at = _iso(datetime.now(UTC))
        if not self.state.claim_finish(run_id, finished_at):
            return  # another invocation of the same run finished it
        if run.complete:
            self.state.mark_materialized(Materialized(run_id, run.started_at, finished_at, run.done, run.source))
            if self.state.since() is None:
                self.state.set_since(run.as_of or run.started_at)
        self.state.release(self.state.lock_key("full"), run_id)
        self.state.retire_run(run_id)
        age = time.time() - datetime.fromisoformat(run.started_at).timestamp()
        log.info("refresh finished", extra={"fields": {
            "event": "refresh_finished", "mode": "full", "run_id": run_id, "feature_set": fs.name,
            "version": run.version, **tracker.snapshot(), "refresh_age_s": round(age, 1)}})

    # --- incremental --------------------------------------------------------------------------

    def incremental(self, name: str, since: datetime | None = None, version: int | None = None,
                    budget_s: float | None = None, max_chunks: int | None = None,
                    sink: ProgressSink | None = None) -> dict[str, Any]:
        """Refresh the users changed since ``since`` (default: where the last pass stopped)."""
        versions = shared_versions(name, version)
        token = new_run_id()
        lock = self.state.lock_key(INCREMENTAL)
        if self.state.take(lock, token, self._lock_ms) != token:
            raise Conflict(f"an incremental refresh of {name} is already running", code="refresh_in_progress")
        try:
            return self._incremental(name, versions, since, budget_s, max_chunks, sink)
        finally:
            self.state.release(lock, token)

    def _incremental(self, name: str, versions: list[int], since: datetime | None, budget_s: float | None,
                     max_chunks: int | None, sink: ProgressSink | None) -> dict[str, Any]:
        now, safe = self.source.safe_now()
        until = safe - timedelta(seconds=self.config.incremental_overlap_s)
        fields: dict[str, Any] = {"mode": INCREMENTAL, "feature_set": name, "versions": versions}
        run: IncrementalRun | None
        if since is not None:
            if since > now:
                raise InvalidParameter(f"since {_iso(since)} is in the future (the source's clock says {_iso(now)})",
                                       code="watermark_in_future")
            self.state.delete_incremental()
            run = None
        else:
            run = self.state.load_incremental()
            if run is None:
                record = self.state.materialized()
                stored = self.state.since() or (record or {}).get("started_at")
                if stored is None:
                    # Nothing to start from: what is cached came from reads and CDC; changes from now on count.
                    self.state.set_since(_iso(until))
                    return {**fields, "done": True, "initialized": True, "watermark": _iso(until), "written": 0,
                            "progress": {"done": 0, "total": 0}, "next": None}
                since = datetime.fromisoformat(stored)
        if run is None:
            assert since is not None
            run = IncrementalRun(since=_iso(since), until=_iso(max(since, until)), started_at=_iso(now))
            self.state.save_incremental(run)
        budget = Budget(budget_s, max_chunks)
        tracker = Tracker(fields, 0, run.done, self.config.progress_every_s, sink)
        written, finished = 0, False
        with self.source.changed_since(datetime.fromisoformat(run.since), run.after, self.config.chunk_users) as pages:
            def jobs() -> Iterator[tuple[str, Any]]:
                nonlocal finished
                for ids in pages:
                    if not budget.take():
                        return
                    yield ids[-1], partial(self.source.vectors_for, ids)
                finished = True

            for last_id, batch in pipelined(jobs(), self.config.workers):
                written += self._write(batch)
                self.state.incremental_progress(last_id, len(batch.vectors) + len(batch.missing))
                tracker.advance(len(batch.vectors) + len(batch.missing))
        snapshot = tracker.snapshot()
        snapshot["total"] = snapshot["done"]
        if not finished:
            log.info("refresh step", extra={"fields": {"event": "refresh_step", **fields, **snapshot,
                                                       "since": run.since, "written": written}})
            return {**fields, "done": False, "since": run.since, "written": written, "progress": snapshot,
                    "next": {"mode": INCREMENTAL, "feature_set": name}}
        self.state.set_since(run.until)
        self.state.delete_incremental()
        age = time.time() - datetime.fromisoformat(run.started_at).timestamp()
        log.info("refresh finished", extra={"fields": {"event": "refresh_finished", **fields, **snapshot,
                                                       "since": run.since, "refresh_age_s": round(age, 1)}})
        return {**fields, "done": True, "since": run.since, "watermark": run.until, "written": written,
                "progress": snapshot, "next": None}

    # --- users -------------------------------------------------------------------------------

    def users(self, name: str, user_ids: Sequence[str], version: int | None = None) -> dict[str, Any]:
        """Recompute these users now; ids that do not exist get a tombstone (compare-and-set like any write)."""
        unique = list(dict.fromkeys(user_ids))
        if len(unique) > self.config.users_max:
            raise BatchTooLarge(f"{len(unique)} user ids in one refresh; the limit is {self.config.users_max}")
        versions = shared_versions(name, version)
        written, unknown = 0, []
        for i in range(0, len(unique), self.config.chunk_users):
            batch = self.source.vectors_for(unique[i:i + self.config.chunk_users])
            written += self._write(batch)
            unknown += batch.missing
        return {"mode": "users", "feature_set": name, "versions": versions,
                "requested": len(unique), "written": written, "unknown_users": unknown}
