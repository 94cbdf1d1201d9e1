"""fs-generate: load synthetic BNPL data through COPY, resumably, and append live activity.

    fs-generate seed --users 1000000 [--seed 42] [--as-of 2026-11-23T12:00:00Z] [--workers 2] [--reset]
    fs-generate live --orders 100 [--seed 7] [--payments 50]

``seed`` loads users in blocks of 10,000; each block is one transaction that also records the
block as done, so an interrupted run resumes where it stopped (same seed and size: the
original as-of instant is reused). ``live`` commits new orders stamped now and pays some due
installments, one small transaction each, as an application would (CDC sees every one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.pool import AsyncResult
from typing import TypeVar

from feature_store.cli.progress import Progress
from feature_store.cli.runner import run_cli
from feature_store.domain.synthetic import (
    BLOCK_USERS,
    CATEGORY_MEAN_AMOUNT,
    MAX_USERS,
    N_MERCHANTS,
    Block,
    generate_block,
    user_id,
)
from feature_store.errors import Conflict, InvalidParameter
from feature_store.services.migrations import ensure_partitions, month_start
from feature_store.settings import Settings
from feature_store.stores.postgres import Connection, PostgresPool

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS seed_runs (
    run_key      TEXT PRIMARY KEY,
    seed         BIGINT NOT NULL,
    users        BIGINT NOT NULL,
    as_of        TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS seed_blocks (
    run_key  TEXT NOT NULL,
    block    INTEGER NOT NULL,
    PRIMARY KEY (run_key, block)
)
"""
T = TypeVar("T")
R = TypeVar("R")
_SEED_LOCK = 7_301_557_042
_TABLES = ("installments", "installment_plans", "risk_scores", "transactions", "users")
_COPY_COLUMNS = {
    "users": "user_id, age, location_country, signup_date, verification_status, income_bracket, "
             "created_at, updated_at",
    "transactions": "transaction_id, user_id, amount, currency, merchant, category, status, created_at",
    "installment_plans": "plan_id, user_id, transaction_id, principal, n_installments, status, "
                         "created_at, updated_at",
    "installments": "plan_id, seq, user_id, due_date, amount, paid_at, updated_at",
    "risk_scores": "user_id, risk_score, fraud_probability, payment_delays, device_trust_score, "
                   "credit_utilization, calculated_at",
}


def _positive(text: str, name: str, upper: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidParameter(f"{name} must be a whole number, got {text!r}") from None
    if not 1 <= value <= upper:
        raise InvalidParameter(f"{name} must be between 1 and {upper:,}, got {value:,}")
    return value


def _as_of(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"--as-of must be an ISO 8601 instant, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _chunks(rows: list[str], size: int = 20_000) -> Iterator[bytes]:
    for i in range(0, len(rows), size):
        yield ("\n".join(rows[i:i + size]) + "\n").encode()


def copy_block(conn: Connection, block: Block) -> None:
    """COPY every table of a block (caller holds the transaction)."""
    for table, rows in block.tables().items():
        if rows:
            conn.raw.run(f"COPY {table} ({_COPY_COLUMNS[table]}) FROM STDIN WITH (FORMAT csv)",
                         stream=_chunks(rows))


def _generate(args: tuple[int, int, int, datetime]) -> tuple[int, Block]:
    seed, block, users, as_of = args
    return block, generate_block(seed, block, users, as_of)


def seed(conn: Connection, users: int, seed_value: int, as_of: datetime | None, workers: int,
         reset: bool) -> dict[str, int]:
    """Load ``users`` synthetic users (resuming a matching unfinished run); return row counts."""
    conn.execute(_BOOKKEEPING)
    # One loader per database: a second one would copy the same blocks again.
    if not conn.run("SELECT pg_try_advisory_lock(:k)", k=_SEED_LOCK)[0][0]:
        raise Conflict("another fs-generate seed is loading this database; wait for it or stop it",
                       code="seed_in_progress")
    try:
        return _seed_locked(conn, users, seed_value, as_of, workers, reset)
    finally:
        conn.run("SELECT pg_advisory_unlock(:k)", k=_SEED_LOCK)


def _seed_locked(conn: Connection, users: int, seed_value: int, as_of: datetime | None, workers: int,
                 reset: bool) -> dict[str, int]:
    if reset:
        conn.execute(f"TRUNCATE {', '.join(_TABLES)}, seed_runs, seed_blocks")
    pending_runs = conn.run("SELECT run_key, as_of FROM seed_runs WHERE seed = :s AND users = :u "
                            "AND finished_at IS NULL", s=seed_value, u=users)
    if as_of is None and not pending_runs and conn.run(
            "SELECT 1 FROM seed_runs WHERE seed = :s AND users = :u AND finished_at IS NOT NULL",
            s=seed_value, u=users):
        print(f"fs-generate: {users:,} users with seed {seed_value} are already loaded", file=sys.stderr)
        return {}
    if as_of is None:
        as_of = pending_runs[0][1] if pending_runs else datetime.now(UTC).replace(microsecond=0)
    assert as_of is not None
    as_of = as_of.astimezone(UTC)
    run_key = f"seed={seed_value};users={users};as_of={as_of.isoformat()}"
    others = conn.run("SELECT run_key FROM seed_runs WHERE run_key <> :k", k=run_key)
    existing_users = conn.run("SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1) AS x")[0][0]
    if others or (existing_users and not conn.run("SELECT 1 FROM seed_runs WHERE run_key = :k", k=run_key)):
        raise Conflict("the database already holds other data; run with --reset to replace it "
                       f"(existing runs: {', '.join(r[0] for r in others) or 'not made by fs-generate'})",
                       code="seed_conflict")
    conn.run("INSERT INTO seed_runs (run_key, seed, users, as_of) VALUES (:k, :s, :u, :a) "
             "ON CONFLICT (run_key) DO NOTHING", k=run_key, s=seed_value, u=users, a=as_of)
    ensure_partitions(conn, month_start(as_of.date() - timedelta(days=3 * 366), -1),
                      month_start(as_of.date(), 3))
    done = {int(r[0]) for r in conn.run("SELECT block FROM seed_blocks WHERE run_key = :k", k=run_key)}
    blocks = [b for b in range((users + BLOCK_USERS - 1) // BLOCK_USERS) if b not in done]
    progress = Progress("seed", users, "users", already_done=min(users, len(done) * BLOCK_USERS))
    counts: dict[str, int] = {}
    work = [(seed_value, b, users, as_of) for b in blocks]
    for block_no, block in _bounded_map(_generate, work, workers):
        conn.execute("BEGIN")
        try:
            copy_block(conn, block)
            conn.run("INSERT INTO seed_blocks (run_key, block) VALUES (:k, :b)", k=run_key, b=block_no)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        for table, n in block.counts().items():
            counts[table] = counts.get(table, 0) + n
        progress.advance(len(block.users))
    progress.close()
    conn.run("UPDATE seed_runs SET finished_at = now() WHERE run_key = :k", k=run_key)
    conn.execute("ANALYZE users; ANALYZE transactions; ANALYZE installments; ANALYZE installment_plans; "
                 "ANALYZE risk_scores")
    return counts


def _bounded_map(fn: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` in order, on ``workers`` processes, with at most ``workers + 1`` results
    waiting: memory stays flat however many blocks there are (Pool.imap would run ahead)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pending: deque[AsyncResult[R]] = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) > workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def live(conn: Connection, orders: int, payments: int, seed_value: int) -> dict[str, int]:
    """Commit ``orders`` new orders stamped now for random existing users and pay due installments."""
    rng = random.Random(seed_value)
    n_users = int(conn.run("SELECT count(*) FROM users")[0][0])
    if n_users == 0:
        raise Conflict("there are no users yet: run fs-generate seed first", code="no_users")
    now = datetime.now(UTC)
    ensure_partitions(conn, month_start(now.date()), month_start(now.date(), 1))
    ids = [r[0] for r in conn.run("SELECT user_id FROM users ORDER BY random() LIMIT :n",
                                  n=min(n_users, max(orders, 1)))]
    categories = list(CATEGORY_MEAN_AMOUNT)
    for i in range(orders):
        uid = ids[i % len(ids)]
        category = rng.choice(categories)
        amount = round(rng.lognormvariate(4.3, 0.6), 2)
        conn.run("INSERT INTO transactions (transaction_id, user_id, amount, currency, merchant, category, "
                 "status, created_at) VALUES (:t, :u, :a, 'USD', :m, :c, 'completed', now())",
                 t=f"live-{now:%Y%m%d%H%M%S}-{seed_value}-{i}", u=uid, a=amount,
                 m=f"m{rng.randrange(N_MERCHANTS):05d}", c=category)
    paid = conn.run(
        "UPDATE installments SET paid_at = now() WHERE (plan_id, seq) IN ("
        "  SELECT plan_id, seq FROM installments WHERE paid_at IS NULL AND due_date <= CURRENT_DATE "
        "  ORDER BY due_date LIMIT :n) RETURNING plan_id", n=payments)
    return {"orders": orders, "payments": len(paid)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fs-generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_seed = sub.add_parser("seed", help="load a synthetic data set through COPY (resumable)")
    p_seed.add_argument("--users", required=True)
    p_seed.add_argument("--seed", default="42")
    p_seed.add_argument("--as-of", default=None, help="the instant the data ends at (default: now)")
    p_seed.add_argument("--workers", default="2")
    p_seed.add_argument("--reset", action="store_true", help="empty the tables first")
    p_live = sub.add_parser("live", help="append live activity stamped now")
    p_live.add_argument("--orders", default="100")
    p_live.add_argument("--payments", default="20")
    p_live.add_argument("--seed", default="7")
    args = parser.parse_args(argv)

    def body() -> int:
        seed_value = _positive(args.seed, "--seed", 2**62)
        if args.command == "seed":
            users = _positive(args.users, "--users", MAX_USERS)
            workers = _positive(args.workers, "--workers", 64)
            as_of = _as_of(args.as_of)
        else:
            orders = _positive(args.orders, "--orders", 1_000_000)
            payments = _positive(args.payments, "--payments", 1_000_000)
        settings = Settings.from_env()
        pool = PostgresPool(settings.postgres, bulk=True)
        try:
            with pool.connection() as conn:
                if args.command == "seed":
                    counts = seed(conn, users, seed_value, as_of, workers, args.reset)
                else:
                    counts = live(conn, orders, payments, seed_value)
        finally:
            pool.close()
        print(" ".join(f"{k}={v:,}" for k, v in counts.items()))
        return 0

    return run_cli("fs-generate", body)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["copy_block", "live", "main", "seed", "user_id"]
