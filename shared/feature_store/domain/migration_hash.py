"""Which users' reads go to the migration's target: a stable hash of the user id against a percentage.

The bucket is the first 8 bytes of SHA-256 of the UTF-8 id, modulo 10,000: the same in every process,
instance, Python version and machine (Python's ``hash()`` of a str is salted per process, so it would
send one user to different databases from different instances). Raising the percentage only adds
users to the target (a user under 1 % is under 10 %); lowering it only takes users back.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000  # basis points: percentages with two decimals


def bucket(user_id: str) -> int:
    """The user's bucket, 0 <= bucket < BUCKETS."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % BUCKETS


def threshold(percent: float) -> int:
    """The buckets below this go to the target at ``percent`` (0..100)."""
    return max(0, min(BUCKETS, round(percent * BUCKETS / 100)))


def to_target(user_id: str, percent: float) -> bool:
    """Whether the user's reads go to the target at ``percent``."""
    return bucket(user_id) < threshold(percent)
