"""fs-refresh: the refresh_cache modes from a terminal, run to completion with a progress bar.

    fs-refresh full [--version N] [--run-id ID] [--from USER] [--to USER] [--shards N] [--source bigquery]
    fs-refresh incremental [--since 2026-11-23T12:00:00Z]
    fs-refresh users USER [USER ...] | --file PATH
    fs-refresh invalidate --users USER [USER ...] | --version N [--force]
    fs-refresh switch --version N [--force]
    fs-refresh stats

Every mode takes --feature-set (default FS_SERVING_FEATURE_SET). The answer is printed as JSON
on stdout; progress goes to stderr. Ctrl-C stops a full or incremental run after the chunks in
flight and exits 130; its checkpoint is kept: ``fs-refresh full --run-id ID`` resumes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from feature_store import logs
from feature_store.cli.progress import Progress
from feature_store.cli.runner import run_cli
from feature_store.errors import InvalidParameter
from feature_store.services.refresh import Refresher
from feature_store.transports.refresh_api import RUN_ID_PATTERN, check_user_ids, parse_since
from feature_store.wiring import services


class ProgressBar:
    """Adapts cli.progress.Progress to the refresher's progress sink."""

    def __init__(self, label: str, unit: str = "users") -> None:
        self.label, self.unit = label, unit
        self.bar: Progress | None = None

    def start(self, total: int, done: int) -> None:
        self.bar = Progress(self.label, total, self.unit)
        if done:
            self.bar.advance(done)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fs-refresh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)

    def mode(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text)
        p.add_argument("--feature-set", default=None)
        return p

    full = mode("full", "every user (or an id range), resumable")
    full.add_argument("--version", type=int, default=None, help="default: the served version")
    full.add_argument("--run-id", default=None, help="resume this run from its checkpoint")
    full.add_argument("--from", dest="from_user", default=None, help="first user id (inclusive)")
    full.add_argument("--to", dest="to_user", default=None, help="last user id (exclusive)")
    full.add_argument("--shards", type=int, default=1, help="key ranges a workflow could run in parallel")
    full.add_argument("--max-chunks", type=int, default=None, help="stop after this many chunks (resumable)")
    full.add_argument("--source", choices=["postgres", "bigquery"], default="postgres",
                      help="bigquery: warm up from the offline mirrors, filling only what Redis lacks")
    inc = mode("incremental", "users changed since a timestamp (default: where the last pass stopped)")
    inc.add_argument("--since", default=None)
    inc.add_argument("--version", type=int, default=None)
    users = mode("users", "an explicit list of users")
    users.add_argument("user_ids", nargs="*")
    users.add_argument("--file", type=Path, default=None, help="one user id per line")
    users.add_argument("--version", type=int, default=None)
    inv = mode("invalidate", "drop vectors of some users, or of a whole version")
    inv.add_argument("--users", nargs="+", default=None)
    inv.add_argument("--version", type=int, default=None)
    inv.add_argument("--force", action="store_true", help="drop the served version too")
    switch = mode("switch", "serve another version (needs a finished full run of it)")
    switch.add_argument("--version", type=int, required=True)
    switch.add_argument("--force", action="store_true", help="switch to a version not materialized")
    mode("stats", "hit rate, materialization records, Redis memory")
    return parser


def _full(refresher: Refresher, name: str, args: argparse.Namespace) -> dict[str, Any]:
    if args.run_id is not None and not re.fullmatch(RUN_ID_PATTERN, args.run_id):
        raise InvalidParameter(f"--run-id {args.run_id!r} is not a run id", code="invalid_run_id")
    if not 1 <= args.shards <= 256:
        raise InvalidParameter("--shards must be between 1 and 256")
    lo = None if args.from_user is None else check_user_ids([args.from_user], 1)[0]
    hi = None if args.to_user is None else check_user_ids([args.to_user], 1)[0]
    run_id = args.run_id or refresher.start_full(name, args.version, lo, hi, args.shards, args.source)
    print(f"fs-refresh: run {run_id}", file=sys.stderr)
    bar = ProgressBar("refresh")
    try:
        return refresher.full(name, args.version, run_id, budget_s=None, max_chunks=args.max_chunks, sink=bar)
    except KeyboardInterrupt:
        print(f"\nfs-refresh: the checkpoint is kept; resume with: fs-refresh full --run-id {run_id}",
              file=sys.stderr)
        raise
    finally:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body() -> int:
        svc = services()
        logs.configure(svc.settings.log_level)
        refresher, admin = svc.refresher, svc.cache_admin
        name = args.feature_set or svc.settings.serving.feature_set
        limit = svc.settings.refresh.users_max
        result: dict[str, Any]
        if args.mode == "full":
            result = _full(refresher, name, args)
        elif args.mode == "incremental":
            since = None if args.since is None else parse_since(args.since)
            bar = ProgressBar("incremental")
            result = refresher.incremental(name, since, args.version, None, None, bar)
            bar.close()
        elif args.mode == "users":
            ids = list(args.user_ids)
            if args.file is not None:
                ids += [line.strip() for line in args.file.read_text().splitlines() if line.strip()]
            if not ids:
                raise InvalidParameter("name at least one user id, or --file")
            result = refresher.users(name, check_user_ids(ids, limit), args.version)
        elif args.mode == "invalidate":
            if args.users:
                result = admin.invalidate_users(name, check_user_ids(args.users, limit), args.version)
            elif args.version is not None:
                result = admin.drop_version(name, args.version, force=args.force)
            else:
                raise InvalidParameter("invalidate needs --users, or --version to drop a whole version")
        elif args.mode == "switch":
            result = admin.switch(name, args.version, args.force)
        else:
            result = admin.stats(name)
        print(json.dumps(result, indent=2, default=str))
        return 0

    return run_cli("fs-refresh", body)


if __name__ == "__main__":
    sys.exit(main())
