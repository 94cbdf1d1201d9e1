"""How one logical call is made: a deadline for all of it, retries of Unavailable only, optional hedging.

- The deadline covers every attempt and every wait: each attempt gets what is left of it, and a wait
  that would end past it is not started (the last error is raised instead).
- Retries: only ``Unavailable`` (503 / UNAVAILABLE, a refused or reset connection). The wait before
  retry n (0-based) is drawn uniformly from [0, min(backoff_max_s, backoff_s * 2**n)] ("full jitter"),
  and is never shorter than the server's Retry-After / RetryInfo.
- Hedging (``hedge_after_s``): when an attempt has not answered after that long, the same request is
  sent once more and the first answer wins (reads are idempotent); the slower one is abandoned.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import TypeVar

from feature_store_client.errors import DeadlineExceeded, Unavailable

T = TypeVar("T")
Attempt = Callable[[float], T]  # called with the seconds it may take


@dataclass
class CallPolicy:
    attempts: int = 3
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0
    hedge_after_s: float | None = None
    random: Callable[[], float] = random.random
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _pool: futures.ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def run(self, attempt: Attempt[T], timeout_s: float) -> T:
        """``attempt``'s answer, retried and hedged as above within ``timeout_s`` seconds."""
        deadline = self.clock() + timeout_s
        for n in range(self.attempts):
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise DeadlineExceeded(f"no answer within the deadline of {timeout_s:g} s")
            try:
                return self._once(attempt, remaining)
            except Unavailable as exc:
                if n == self.attempts - 1:
                    raise
                wait = max(exc.retry_after_s or 0.0, self.random() * min(self.backoff_max_s, self.backoff_s * 2**n))
                if self.clock() + wait >= deadline:
                    raise
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, attempt: Attempt[T], remaining: float) -> T:
        if self.hedge_after_s is None or self.hedge_after_s >= remaining:
            return attempt(remaining)
        pool = self._executor()
        started = self.clock()
        first = pool.submit(attempt, remaining)
        done, _ = futures.wait([first], timeout=self.hedge_after_s)
        if done:
            return first.result()
        second = pool.submit(attempt, max(remaining - (self.clock() - started), 0.001))
        pending = {first, second}
        error: BaseException | None = None
        while pending:
            done, pending = futures.wait(pending, timeout=max(remaining - (self.clock() - started), 0.0),
                                         return_when=futures.FIRST_COMPLETED)
            if not done:
                break
            for f in done:
                if f.exception() is None:
                    for loser in pending:
                        loser.cancel()
                    return f.result()
                error = error or f.exception()
        if error is not None:
            raise error
        raise DeadlineExceeded(f"no answer within {remaining:.3f} s (hedged)")

    def _executor(self) -> futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fs-hedge")
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
