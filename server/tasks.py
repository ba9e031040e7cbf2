"""Stopping background loops.

redis-py can swallow a cancellation that lands while a command is in flight
(redis/redis-py#2028, #2551): the task then goes on with its loop as if it had
not been cancelled.  So every loop also checks a stop flag at its top, and
stopping never waits without a bound.
"""
from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("sca_progress.tasks")


async def cancel_and_wait(tasks: list[asyncio.Task], timeout: float = 10.0) -> None:
    """Cancel *tasks* and wait (at most *timeout* seconds) for them to end."""
    tasks = [t for t in tasks if not t.done()]
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        log.error("background task %s did not stop within %.0f s", t.get_name(), timeout)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until *event* is set, at most *timeout* seconds; True when it is set.

    asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a
    cancellation that arrives as the event fires, and a loop would not stop.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()
    return event.is_set()
