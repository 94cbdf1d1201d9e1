"""Who is reading and what they may read: the resolved caller of one request and its scope.

A ``Caller`` is resolved once per request at the edge (transports/access.py) from an API key or a
Google identity, before anything is read; the read path only asks its ``scope``. The audit trail
records ``caller.client_id``. Pure data and rules: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from feature_store.domain.catalog import FeatureSet
from feature_store.errors import BatchOverClientLimit, FeatureOutOfScope, FeatureSetOutOfScope

Kind = Literal["api_key", "google", "development"]


@dataclass(frozen=True, slots=True)
class Rate:
    """A client's sustained rate (users per second) and burst (users at once); a batch costs one per user."""

    per_s: float
    burst: int

    @property
    def interval_us(self) -> int:
        """Microseconds one unit costs (GCRA's emission interval)."""
        return max(1, math.ceil(1_000_000 / self.per_s))


@dataclass(frozen=True, slots=True)
class Scope:
    """What a client may read: feature groups and feature sets (``None``: all), a batch size and a rate.

    ``feature_sets`` holds ``name`` (every version) or ``name:version`` entries.
    """

    groups: frozenset[str] | None
    feature_sets: frozenset[str] | None
    batch_max: int
    rate: Rate

    def check_feature_set(self, fs: FeatureSet) -> None:
        """FeatureSetOutOfScope unless this set and version are allowed."""
        allowed = self.feature_sets
        if allowed is not None and fs.name not in allowed and f"{fs.name}:{fs.version}" not in allowed:
            raise FeatureSetOutOfScope(f"this client may not read {fs.name} v{fs.version}; "
                                       f"allowed: {', '.join(sorted(allowed)) or 'none'}")

    def features(self, fs: FeatureSet, names: Sequence[str] | None) -> tuple[list[str] | None, list[str]]:
        """The names to read and the ones withheld.

        Named features outside the scope are FeatureOutOfScope naming them (after the names are checked
        to exist: an unknown name stays 400 ``unknown_feature``). ``None`` (all features) becomes the
        features in scope, and the others are returned as withheld.
        """
        if names is not None:
            fs.select(names)  # UnknownFeature first: a name that does not exist is not a scope question
        groups = self.groups
        if groups is None:
            return (None if names is None else list(names)), []
        group_of = {f.name: f.group for f in fs.features}
        if names is not None:
            outside = sorted({n for n in names if group_of[n] not in groups})
            if outside:
                raise FeatureOutOfScope(f"outside this client's scope: {', '.join(outside)} (it may read the groups "
                                        f"{', '.join(sorted(groups)) or 'none'})", outside)
            return list(names), []
        allowed = [f.name for f in fs.features if f.group in groups]
        withheld = [f.name for f in fs.features if f.group not in groups]
        if not allowed:
            raise FeatureOutOfScope(f"no feature of {fs.name} v{fs.version} is in this client's scope", withheld)
        return (None if not withheld else allowed), withheld

    def check_batch(self, size: int) -> None:
        if size > self.batch_max:
            raise BatchOverClientLimit(f"{size} user ids in one batch; this client's batch_max is {self.batch_max}")


@dataclass(frozen=True, slots=True)
class Caller:
    """The client a request is made by, resolved once per request before anything is read."""

    client_id: str
    kind: Kind
    principal: str | None  # the Google email or subject; the key id for an API key
    scope: Scope


def parse_list(text: str | None) -> frozenset[str] | None:
    """A stored comma-separated scope list: ``None`` (NULL) means everything."""
    if text is None:
        return None
    return frozenset(p.strip() for p in text.split(",") if p.strip())


def format_list(items: Iterable[str] | None) -> str | None:
    return None if items is None else ",".join(sorted(set(items)))
