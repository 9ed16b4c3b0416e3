"""Ordered, bounded read-ahead on a thread pool.

A retrieval reads (decrypts, decompresses, verifies) instances on worker threads while
the event loop writes earlier ones to the socket. Results come back in the order asked,
and at most ``max_ahead`` units of weight (bytes) are read but not yet handed out, so a
study of any size holds a bounded amount of memory per request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from concurrent.futures import Executor
from typing import TypeVar

__all__ = ["batches", "ordered_prefetch", "ordered_tasks"]

K = TypeVar("K")
T = TypeVar("T")


def batches(weights: Sequence[int], target: int) -> list[range]:
    """Cut ``range(len(weights))`` into consecutive runs of about ``target`` weight.

    A run closes once it reaches ``target``; every run has at least one index. Small
    instances then share one thread hop instead of paying one each.
    """
    out: list[range] = []
    start = total = 0
    for index, weight in enumerate(weights):
        total += weight
        if total >= target:
            out.append(range(start, index + 1))
            start, total = index + 1, 0
    if start < len(weights):
        out.append(range(start, len(weights)))
    return out


async def ordered_prefetch(
    executor: Executor | None,
    work: Callable[[K], T],
    keys: Sequence[K],
    weights: Sequence[int],
    max_ahead: int,
) -> AsyncGenerator[T, None]:
    """Yield ``work(key)`` for every key, in order, computed ahead on ``executor`` (None:
    the event loop's default executor).

    At least one key is always in flight; more are submitted while the weight in flight
    stays within ``max_ahead``. Leaving the loop early (an error, a closed connection)
    cancels what has not started; what is running finishes and is dropped.
    """
    if len(keys) != len(weights):
        raise ValueError("one weight per key")
    loop = asyncio.get_running_loop()
    pending: deque[tuple[asyncio.Future[T], int]] = deque()
    ahead = 0
    following = 0
    try:
        while following < len(keys) or pending:
            while following < len(keys) and (
                not pending or ahead + weights[following] <= max_ahead
            ):
                future = loop.run_in_executor(executor, work, keys[following])
                pending.append((future, weights[following]))
                ahead += weights[following]
                following += 1
            future, weight = pending.popleft()
            try:
                result = await future
            finally:
                ahead -= weight
            yield result
    finally:
        for future, _weight in pending:
            future.cancel()


async def ordered_tasks(
    work: Callable[[int], Awaitable[T]], weights: Sequence[int], max_ahead: int
) -> AsyncGenerator[T, None]:
    """Yield ``await work(i)`` for ``i`` in ``range(len(weights))``, in order, with the
    same bound as :func:`ordered_prefetch`, for work that is a coroutine (a read on a pool,
    a request to Orthanc). Leaving early cancels what is still running."""
    pending: deque[tuple[asyncio.Task[T], int]] = deque()
    ahead = 0
    following = 0
    try:
        while following < len(weights) or pending:
            while following < len(weights) and (
                not pending or ahead + weights[following] <= max_ahead
            ):
                pending.append((asyncio.ensure_future(work(following)), weights[following]))
                ahead += weights[following]
                following += 1
            task, weight = pending.popleft()
            try:
                result = await task
            finally:
                ahead -= weight
            yield result
    finally:
        for task, _weight in pending:
            task.cancel()
