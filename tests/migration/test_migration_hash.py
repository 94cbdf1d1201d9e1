"""The stable hash that picks each user's database: the same answer in every process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

from conftest import ROOT
from feature_store.domain.migration_hash import BUCKETS, bucket, threshold, to_target

IDS = [f"u{n:09d}" for n in range(2000)] + ["user@example.com", "ü-ñ", "x" * 64]
SCRIPT = ("import json, sys\nfrom feature_store.domain.migration_hash import bucket\n"
          "print(json.dumps([bucket(u) for u in json.load(sys.stdin)]))")


def buckets_in_a_new_process(hash_seed: str) -> list[int]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT / "shared")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], input=json.dumps(IDS), env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    return list(json.loads(done.stdout))


def test_the_same_buckets_in_processes_with_different_hash_seeds() -> None:
    mine = [bucket(u) for u in IDS]

    first, second = buckets_in_a_new_process("1"), buckets_in_a_new_process("2")

    assert mine == first == second
    # Python's own hash() differs between those processes: the reason it is not used.
    salted = [subprocess.run([sys.executable, "-c", "print(hash('u000000001'))"], env={**os.environ,
                             "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True).stdout
              for seed in ("1", "2")]
    assert salted[0] != salted[1]


def test_buckets_are_pinned() -> None:
    # Changing the function would move users between databases in the middle of a migration.
    assert [bucket("u000000001"), bucket("u000000042"), bucket("user@example.com")] == [9695, 56, 5632]
    assert all(0 <= bucket(u) < BUCKETS for u in IDS)


def test_raising_the_percentage_only_adds_users() -> None:
    steps = [0, 1, 10, 50, 100]
    chosen = [{u for u in IDS if to_target(u, p)} for p in steps]

    assert chosen[0] == set() and chosen[-1] == set(IDS)
    for smaller, larger in itertools.pairwise(chosen):
        assert smaller <= larger
    assert 150 <= len(chosen[2]) <= 260  # about 10 % of 2,003 ids (the buckets are fixed: no flakiness)
    assert threshold(0.5) == 50 and threshold(100) == BUCKETS and threshold(150) == BUCKETS
