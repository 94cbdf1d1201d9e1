"""The ports services use: what each store does, described by data, with nothing about how.

Each port has a real implementation (Redis, PostgreSQL/CockroachDB, BigQuery) and an in-memory twin
(stores/memory.py); one contract suite (tests/contract/) runs against both, so a service tested
over the twin behaves the same over the real store.

Errors: every port raises ``DependencyTimeout`` when its backend was too slow to answer, and
``DependencyUnavailable`` when it could not be reached or failed; nothing else escapes for an
outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from feature_store.domain.access import Rate
from feature_store.domain.changes import Change
from feature_store.domain.state import UserState


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The user was deleted at ``watermark``."""

    user_id: str
    watermark: int


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A cached value that cannot be read (another layout mid-deploy, a corrupted key): a miss.

    ``raw`` is the value as stored, so that exactly that value can be discarded (compare-and-delete)
    and a recomputed state written in its place.
    """

    user_id: str
    raw: bytes


Entry = UserState | Tombstone
Cached = UserState | Tombstone | Undecodable


@dataclass(frozen=True, slots=True)
class Admission:
    """A rate limiter's answer: admitted (the cost consumed), or refused with the wait until it would be."""

    admitted: bool
    wait_s: float = 0.0


class OnlineStore(Protocol):
    """The cached states of one layout, written compare-and-set on the source watermark."""

    def get_many(self, user_ids: Sequence[str], wait_s: float | None = None) -> list[Cached | None]:
        """What is cached for each id, in the order asked; None where nothing is (one round trip).

        ``wait_s``: how long to wait for the reply, instead of the store's read deadline (the reader's
        last resort, when the source cannot answer either).
        """
        ...

    def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                         cost: int) -> tuple[Admission, list[Cached | None]]:
        """The client's limiter charged ``cost`` (all or nothing) and ``get_many(user_ids)``, in one round trip."""
        ...

    def put_if_newer(self, entries: Sequence[Entry]) -> int:
        """Write each entry unless a newer watermark is stored (equal overwrites); how many were written."""
        ...

    def discard(self, items: Sequence[Undecodable]) -> int:
        """Delete each undecodable value if it is still the one stored; how many were deleted."""
        ...

    def delete_many(self, user_ids: Sequence[str]) -> int:
        """Drop what is cached for these users (the next read recomputes it); how many keys existed."""
        ...


class AsyncOnlineReads(Protocol):
    """The online store's reads for a request served on an event loop: ``OnlineStore``'s, awaited."""

    async def get_many(self, user_ids: Sequence[str]) -> list[Cached | None]: ...

    async def get_many_limited(self, user_ids: Sequence[str], client_id: str, rate: Rate,
                               cost: int) -> tuple[Admission, list[Cached | None]]: ...


class Source(Protocol):
    """The source of truth, read as user states."""

    def snapshot_states(self, user_ids: Sequence[str]) -> tuple[int, dict[str, UserState]]:
        """A watermark and the states of the users that exist among ``user_ids``, all tagged with it.

        Every commit at or below the watermark is in the states: a recomputation that starts after a
        commit carries a watermark at or above it. The watermark is returned even for no users.
        """
        ...


class Changelog(Protocol):
    """Where row changes land offline, with the id of the message that carried each."""

    def append(self, items: Sequence[tuple[Change, str]]) -> int:
        """Land every change (at least once); how many rows were written."""
        ...
