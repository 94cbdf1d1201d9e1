"""feature_store/thread_pool.py: results and errors reach the caller; shutdown runs or cancels what is queued."""

from __future__ import annotations

import asyncio
import threading

import pytest

from feature_store.thread_pool import FixedThreadPool


def test_results_and_errors_reach_the_caller_awaiting_on_a_loop() -> None:
    pool = FixedThreadPool(2, "t")

    async def main() -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(pool, lambda: 6 * 7)
        try:
            await loop.run_in_executor(pool, lambda: 1 // 0)
        except ZeroDivisionError as exc:
            return ok, type(exc).__name__
        return ok, "nothing raised"

    try:
        assert asyncio.run(main()) == (42, "ZeroDivisionError")
    finally:
        pool.shutdown()


def test_shutdown_cancels_what_waits_when_asked_and_refuses_new_work() -> None:
    pool = FixedThreadPool(1, "t")
    started, release = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return release.wait(10)

    running = pool.submit(hold)
    queued = pool.submit(lambda: "ran")
    assert started.wait(10)

    pool.shutdown(wait=False, cancel_futures=True)
    release.set()

    assert running.result(10) is True
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_shutdown_without_cancelling_runs_what_was_queued() -> None:
    pool = FixedThreadPool(1, "t")
    futures = [pool.submit(lambda i=i: i) for i in range(5)]

    pool.shutdown(wait=True)

    assert [f.result(0) for f in futures] == [0, 1, 2, 3, 4]
