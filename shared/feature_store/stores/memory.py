"""In-memory twins of the store ports (stores/ports.py), for unit tests of services.

Each twin keeps the real store's rules - the online store holds the same encoded values and
compares watermarks the way the Lua script does - and the same contract suite (tests/contract/)
runs against twin and real server. Two hooks make faults and interleavings easy to force:

- ``fault``: called with the operation's name before each call; raise from it (for example
  ``DependencyTimeout``) to make that call fail as the real store would;
- ``pause``: called with the operation's name after a read has taken its snapshot and before it
  returns (MemorySource) or before a write is applied (MemoryOnlineStore); block in it (a barrier)
  to hold a call at exactly that point while another one runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from feature_store.domain.access import Rate
from feature_store.domain.changes import Change
from feature_store.domain.state import UserState
from feature_store.stores.dialect import WATERMARK_HEX_DIGITS
from feature_store.stores.ports import Admission, Cached, Entry, Undecodable
from feature_store.stores.redis_online import decode, encode

Hook = Callable[[str], None]


def _nothing(_: str) -> None:
    return None


class MemoryOnlineStore:
    """The online store's contract over a dict of encoded values."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.fault: Hook = _nothing
        self.pause: Hook = _nothing
        self.refused = 0  # writes the compare-and-set refused
        self.rates: dict[str, float] = {}  # client -> GCRA theoretical arrival time (microseconds)
        self._lock = threading.Lock()

    def get_many(self, user_ids: Sequence[str], wait_s: float | None = None) -> list[Cached | None]:
        self.fault("get_many")
        with self._lock:
            raws = [self.values.get(u) for u in user_ids]
        return [None if raw is None else decode(u, raw) for u, raw in zip(user_ids, raws, strict=True)]

    def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                         cost: int) -> tuple[Admission, list[Cached | None]]:
        """The same GCRA as the Lua script, on this process's monotonic clock."""
        self.fault("get_many_limited")
        with self._lock:
            now = time.monotonic() * 1_000_000
            tat = max(self.rates.get(client_id, 0.0), now)
            new_tat = tat + cost * rate.interval_us
            wait = new_tat - rate.burst * rate.interval_us - now
            if wait <= 0:
                self.rates[client_id] = new_tat
        admission = Admission(True) if wait <= 0 else Admission(False, wait / 1_000_000)
        return admission, self.get_many(user_ids)

    def put_if_newer(self, entries: Sequence[Entry]) -> int:
        self.fault("put_if_newer")
        self.pause("put_if_newer")
        written = 0
        with self._lock:
            for entry in entries:
                value = encode(entry)
                current = self.values.get(entry.user_id)
                if current is not None and current[:WATERMARK_HEX_DIGITS] > value[:WATERMARK_HEX_DIGITS]:
                    self.refused += 1
                    continue
                self.values[entry.user_id] = value
                written += 1
        return written

    def discard(self, items: Sequence[Undecodable]) -> int:
        self.fault("discard")
        with self._lock:
            same = [i.user_id for i in items if self.values.get(i.user_id) == i.raw]
            for user_id in same:
                del self.values[user_id]
        return len(same)

    def delete_many(self, user_ids: Sequence[str]) -> int:
        self.fault("delete_many")
        with self._lock:
            present = [u for u in dict.fromkeys(user_ids) if u in self.values]
            for user_id in present:
                del self.values[user_id]
        return len(present)

    def put_raw(self, user_id: str, raw: bytes) -> None:
        """Store a value as is (a corrupted key, another layout's value)."""
        with self._lock:
            self.values[user_id] = raw


class MemorySource:
    """The source's contract over a dict of users: every change moves the watermark forward."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.watermark = 1
        self.fault: Hook = _nothing
        self.pause: Hook = _nothing
        self.reads = 0
        self._clock = clock
        self._lock = threading.Lock()

    def set(self, user_id: str, **fields: Any) -> int:
        """Create or change a user (fields of UserState); return the watermark of the change."""
        with self._lock:
            self.watermark += 1
            self.users[user_id] = {**self.users.get(user_id, {}), **fields}
            return self.watermark

    def delete(self, user_id: str) -> int:
        with self._lock:
            self.watermark += 1
            self.users.pop(user_id, None)
            return self.watermark

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        self.fault("snapshot_states")
        with self._lock:
            self.reads += 1
            mark, at = self.watermark, self._clock()
            states = {u: UserState(u, mark, at, **self.users[u]) for u in dict.fromkeys(user_ids) if u in self.users}
        self.pause("snapshot_states")
        return mark, states


class MemoryChangelog:
    """The changelog's contract over a list: every append lands every row."""

    def __init__(self) -> None:
        self.rows: list[tuple[Change, str]] = []
        self.fault: Hook = _nothing
        self._lock = threading.Lock()

    def append(self, items: Sequence[tuple[Change, str]]) -> int:
        self.fault("append")
        with self._lock:
            self.rows.extend(items)
        return len(items)
