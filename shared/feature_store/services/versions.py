"""Which version of a feature set a request that names none is served: the ``active`` pointer in Redis.

Switching is one SET of ``{prefix}:{feature_set}:active`` (docs/redis-keys.md), so every reader
moves to the new version at once, within the per-instance cache time (``FS_REFRESH_VERSION_CACHE_S``,
1 s). The pointer has no TTL, so volatile-lru never evicts it.

Invariant: resolving never fails a read. With no pointer the lowest catalog version is served (a
new version is served only after an explicit switch); when Redis cannot be read, or the pointer
names a version this code does not know, the last version resolved is kept (else the lowest).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from feature_store.domain.catalog import CATALOG
from feature_store.errors import DependencyUnavailable
from feature_store.logs import get_logger
from feature_store.services.blocking import may_block
from feature_store.stores.redis_admin import RedisAdmin

log = get_logger(__name__)


def catalog_versions(feature_set: str) -> list[int]:
    """The versions of ``feature_set`` this code knows, ascending."""
    return sorted(v for (n, v) in CATALOG if n == feature_set)


class ServedVersions:
    """Resolves and switches the served version of each feature set."""

    def __init__(self, admin: RedisAdmin, cache_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.admin = admin
        self.cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, int]] = {}  # name -> (valid until, version)

    def served(self, feature_set: str) -> int | None:
        """The version to serve; None when the catalog has no such feature set."""
        known = catalog_versions(feature_set)
        if not known:
            return None
        now = self._clock()
        cached = self._cache.get(feature_set)
        if cached is not None and now < cached[0]:
            return cached[1]
        fallback = cached[1] if cached is not None else known[0]
        may_block()  # on the event loop: the request goes to the serving pool, which reads the pointer
        try:
            raw = self.admin.pointer(feature_set)
        except DependencyUnavailable as exc:
            # Remembered like a good answer: at most one attempt per cache period while Redis is down.
            self._cache[feature_set] = (now + self.cache_s, fallback)
            log.warning("served version pointer unreadable; keeping the last one",
                        extra={"fields": {"feature_set": feature_set, "error": type(exc).__name__,
                                          "version": fallback}})
            return fallback
        version = known[0] if raw is None else _parse(raw)
        if version not in known:
            log.warning("served version pointer names a version this code does not know",
                        extra={"fields": {"feature_set": feature_set, "pointer": repr(raw), "version": fallback}})
            version = fallback
        self._cache[feature_set] = (now + self.cache_s, version)
        return version

    def pointer(self, feature_set: str) -> int | None:
        """The pointer as stored (None when absent); errors propagate."""
        raw = self.admin.pointer(feature_set)
        return None if raw is None else _parse(raw)

    def switch(self, feature_set: str, version: int) -> int | None:
        """Point ``feature_set`` at ``version`` in one SET; return the version it pointed at before."""
        previous = self.admin.set_pointer(feature_set, version)
        self._cache.pop(feature_set, None)
        return None if previous is None else _parse(previous)


def _parse(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None
