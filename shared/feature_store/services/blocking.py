"""Whether the running request may block: the async serving path runs a request inline on the event loop
only as long as it needs no blocking I/O.

The async edge (transports/asgi.py) runs a handler's preparation under ``inline()``. Any step that
would block (a credential or a served-version pointer not cached, a hit-count flush) calls
``may_block()`` first, which raises ``WouldBlock`` there; the edge then runs the same preparation on
the serving pool, where ``may_block()`` passes. A step calls it before any effect, so running the
preparation again from the start is exact.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_inline: contextvars.ContextVar[bool] = contextvars.ContextVar("inline", default=False)


class Offload(Protocol):
    """Runs ``fn(*args)`` on the serving pool and awaits it (transports/asgi.py: the edge's pool)."""

    def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]: ...


class WouldBlock(Exception):
    """Raised by ``may_block()`` while running inline on the event loop."""


@contextmanager
def inline() -> Iterator[None]:
    """Run the block on the event loop: blocking I/O in it raises WouldBlock instead of blocking."""
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)


def running_inline() -> bool:
    return _inline.get()


def may_block() -> None:
    """Call before blocking I/O: raises WouldBlock when running inline on the event loop."""
    if _inline.get():
        raise WouldBlock
