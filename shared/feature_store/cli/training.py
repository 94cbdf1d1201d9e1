"""fs-training: build a point-in-time training table in the offline store from labelled decisions.

    fs-training --labels labels.csv --table training_2026_11 [--version 1]
    fs-training --labels-table my_dataset.decisions --table training_2026_11

Labels are rows (user_id, decision_time, label) in a CSV or NDJSON file or a BigQuery table; the
table gets, per label row, the credit_decision features as they were at decision_time. A bad
label set (missing columns, unknown users, future timestamps) exits 2 naming the rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from feature_store.cli.runner import run_cli
from feature_store.errors import InvalidParameter
from feature_store.settings import Settings
from feature_store.wiring import Services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fs-training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="a .csv or .ndjson file of user_id, decision_time, label")
    source.add_argument("--labels-table", help="a BigQuery table with those columns (table or dataset.table)")
    parser.add_argument("--table", required=True, help="the training table to create or replace")
    parser.add_argument("--version", default=None, help="feature set version (default: the newest)")
    args = parser.parse_args(argv)

    def body() -> int:
        version = None
        if args.version is not None:
            if not args.version.isdigit() or int(args.version) < 1:
                raise InvalidParameter(f"--version must be a positive whole number, got {args.version!r}")
            version = int(args.version)
        svc = Services(Settings.from_env())
        svc.offline.ensure_schema()
        if args.labels is not None:
            report = svc.training.from_file(args.labels, args.table, version)
        else:
            report = svc.training.from_table(args.labels_table, args.table, version)
        print(json.dumps(report))
        return 0

    return run_cli("fs-training", body)


if __name__ == "__main__":
    sys.exit(main())
