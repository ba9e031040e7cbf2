"""The one sender behind a reporter tree: merging, throttling, retries.

Updates are queued from any thread and merged per node (later fields win).
One asyncio task sends them in rounds, at most *rate* rounds a second: a
round takes the latest merged state of every node changed since the last
one, in the order of their last change, as one request.  So no node is
sent more than *rate* times a second, and a round never holds one node back
while sending a newer change of another (which would reorder a parent's
own progress and its children's roll-up).  The first change after a quiet
spell goes at once.  ``flush()`` sends what is queued without waiting for
the throttle, so the final state is never held back.  A failed request is
retried with backoff; what still fails, or what the service refuses,
becomes a ReporterError that the reporters hand to the job as a warning
(or raise, with ``raise_errors``).  The task runs only while there is
something to send.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
import weakref
from dataclasses import dataclass

from .config import Target
from .errors import Refusal, ReporterError, SendError

#: Most updates in one request (or AMQP publishing round).
MAX_BATCH = 500
#: Longest wait between two attempts of a failed request, in seconds.
MAX_BACKOFF = 10.0


@dataclass
class Stats:
    """Counters of one session."""

    updates: int = 0    # updates queued
    sent: int = 0       # node states delivered (after merging)
    requests: int = 0   # delivery attempts (requests, or AMQP publishing rounds)
    failures: int = 0   # attempts that failed
    lost: int = 0       # node states given up on, or refused


@dataclass
class _Pending:
    key: str
    fields: dict
    first_seq: int  # the oldest queued update merged in


class LoopThread:
    """A private event loop in a daemon thread (for the blocking reporter)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="sca-progress-reporter", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.loop.is_closed()

    def in_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def call(self, coro, timeout: float | None = None):
        """Run *coro* on the loop and wait for its result (concurrent.futures.TimeoutError,
        which is TimeoutError from Python 3.11 on, after *timeout*)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # closed meanwhile
                return
        if not self.in_thread():
            self.thread.join(5)


class Session:
    """Pending updates of one reporter tree and the task that sends them.

    With *threaded*, the session runs on a LoopThread of its own (the
    blocking Reporter); otherwise on the event loop of whoever uses it (the
    AsyncReporter).
    """

    def __init__(self, target: Target, token: str | None = None, *, rate: float | None = 2.0,
                 retries: int = 4, backoff: float = 0.5, timeout: float = 10.0, threaded: bool = False) -> None:
        if rate is not None and rate < 0:
            raise ValueError("rate must be at least 0 (0 or None: no throttling)")
        self.target, self.token = target, token
        self.interval = 1.0 / rate if rate else 0.0
        self.retries, self.backoff, self.timeout = max(0, retries), backoff, timeout
        self.threaded = threaded
        self.stats = Stats()
        self._lock = threading.Lock()
        # What waits to be sent, in order of arrival.  A node has one entry, merged
        # into, except that progress posted to a node after an update of one of its
        # descendants (queued later than the node's entry) starts a second entry
        # behind it, so that the round applies them in the order they were made.
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._latest: dict[str, tuple[str, int]] = {}  # key -> its last entry
        self._last_round = -math.inf     # when the last round was taken (monotonic)
        self._seq = 0
        self._kicked = False            # the sender will look at pending soon
        self._inflight_seq = math.inf   # oldest update of the request under way
        self._errors: list[ReporterError] = []
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: LoopThread | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._transport = None
        self._finalizer = None

    # -- any thread -----------------------------------------------------------------

    def queue(self, items: list[tuple[str, dict]]) -> None:
        """Merge *items* (key, fields) into what is pending and make sure the sender runs."""
        with self._lock:
            for key, fields in items:
                self._seq += 1
                entry = self._latest.get(key)
                if entry is not None and "progress" in fields and self._descendant_after(key, entry):
                    entry = (key, entry[1] + 1)
                    self._pending[entry] = _Pending(key, dict(fields), self._seq)
                    self._latest[key] = entry
                elif entry is not None:
                    self._pending[entry].fields.update(fields)
                else:
                    entry = (key, 0)
                    self._pending[entry] = _Pending(key, dict(fields), self._seq)
                    self._latest[key] = entry
            self.stats.updates += len(items)
            kick = not self._kicked or (self.threaded and (self._thread is None or not self._thread.alive))
            self._kicked = True
        if kick:
            self._kick_from_anywhere()

    def _descendant_after(self, key: str, entry: tuple[str, int]) -> bool:
        """Whether an update of a node below *key* is queued after *entry* (under the lock)."""
        if next(reversed(self._pending)) == entry:
            return False  # the common case, at no cost: nothing is queued after it
        below, after = key + ".", False
        for other in self._pending:
            if after and other[0].startswith(below):
                return True
            after = after or other == entry
        return False

    def take_errors(self) -> list[ReporterError]:
        with self._lock:
            errors, self._errors = self._errors, []
        return errors

    @property
    def pending(self) -> int:
        """Nodes with updates not sent yet."""
        with self._lock:
            return len(self._latest)

    def thread(self) -> LoopThread:
        """The session's loop thread (threaded sessions), started when needed."""
        with self._lock:
            if self._thread is None or not self._thread.alive:
                self._thread = LoopThread()
                self._bind(self._thread.loop)
                if self._finalizer is not None:
                    self._finalizer.detach()
                self._finalizer = weakref.finalize(self, LoopThread.stop, self._thread)
                self._finalizer.atexit = False  # the reporter's own exit hook flushes first
            return self._thread

    def run_blocking(self, coroutine_function, timeout: float | None = None) -> None:
        """Run ``coroutine_function()`` on the session's thread and wait for it (threaded sessions).

        Nothing to do when the thread never started and nothing is pending, and
        nothing is waited for when called from that thread itself (a finalizer).
        """
        with self._lock:
            loop_thread, pending = self._thread, bool(self._pending)
        if loop_thread is not None and loop_thread.in_thread():
            return
        if (loop_thread is None or not loop_thread.alive) and not pending:
            return
        self.thread().call(coroutine_function(), timeout)

    def stop_thread(self) -> None:
        """End the session's thread, if it runs (a later update starts another)."""
        with self._lock:
            loop_thread = self._thread
        if loop_thread is not None and loop_thread.alive:
            loop_thread.stop()

    def _kick_from_anywhere(self) -> None:
        if self.threaded:
            loop_thread = self.thread()
            try:
                loop_thread.loop.call_soon_threadsafe(self._kick)
            except RuntimeError:  # the loop was just closed: the next queue starts another
                with self._lock:
                    self._kicked = False
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: the first call from one will start the sender
            with self._lock:
                self._kicked = False
            return
        if loop is not self._loop:
            self._bind(loop)
        self._kick()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use *loop* from now on (connections made on another loop are dropped, not reused)."""
        self._loop, self._task, self._wake, self._transport = loop, None, asyncio.Event(), None
        self._waiters = []

    # -- on the session's loop ------------------------------------------------------

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name="sca-progress-sender")
        else:
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is sent, or given up on."""
        if self._loop is not asyncio.get_running_loop():
            self._bind(asyncio.get_running_loop())
        with self._lock:
            target = self._seq
        if self._outstanding() > target:
            return
        future = self._loop.create_future()
        self._waiters.append((target, future))
        self._kick()
        await future

    async def aclose(self) -> None:
        """Flush, then release the connection.  The session may be used again afterwards."""
        self._closing = True
        try:
            await self.flush()
            if self._task is not None and not self._task.done():
                self._wake.set()
                await asyncio.shield(self._task)
        finally:
            self._closing = False
            transport, self._transport = self._transport, None
            if transport is not None:
                await transport.close()

    def _outstanding(self) -> float:
        """The oldest queued update not sent yet (inf when there is none)."""
        with self._lock:
            oldest = min((p.first_seq for p in self._pending.values()), default=math.inf)
        return min(oldest, self._inflight_seq)

    def _settle(self) -> None:
        if not self._waiters:
            return
        outstanding = self._outstanding()
        keep = []
        for target, future in self._waiters:
            if future.done():
                continue
            if target < outstanding:
                future.set_result(None)
            else:
                keep.append((target, future))
        self._waiters = keep

    def _pick(self, now: float) -> tuple[list[tuple[str, dict]], float | None]:
        """Take a round, if one is due: (the items, when the next is due if none is)."""
        forced = max((t for t, f in self._waiters if not f.done()), default=0)
        if self._closing:
            forced = math.inf
        with self._lock:
            if not self._pending:
                self._kicked = False
                return [], None
            due = self._last_round + self.interval
            if now < due and not (forced and min(p.first_seq for p in self._pending.values()) <= forced):
                return [], due  # _kicked stays set: the timer will look, queue() need not wake us
            self._kicked = False
            oldest = min(p.first_seq for p in self._pending.values())
            items = [(p.key, p.fields) for p in self._pending.values()]
            self._pending.clear()
            self._latest.clear()
            self._last_round = now
            self._inflight_seq = oldest
        return items, None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            items, next_due = self._pick(now)
            if items:
                try:
                    for at in range(0, len(items), MAX_BATCH):
                        await self._deliver(items[at:at + MAX_BATCH])
                finally:
                    self._inflight_seq = math.inf
                self._settle()
                continue
            self._settle()
            with self._lock:
                if not self._pending:
                    return  # idle: the next queue() starts another task
            try:
                await asyncio.wait_for(self._wake.wait(), None if next_due is None else max(0.0, next_due - now))
            except asyncio.TimeoutError:
                pass

    async def _deliver(self, items: list[tuple[str, dict]]) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            self.stats.requests += 1
            try:
                refused = await self._get_transport().send(items)
            except SendError as e:
                self.stats.failures += 1
                if not e.retryable or attempt == self.retries:
                    tries = f" after {attempt + 1} attempts" if attempt else ""
                    self._fail(ReporterError(f"{e}{tries}; {_lost(items)}", e.code, tuple(k for k, _ in items)))
                    return
                await asyncio.sleep(max(delay, e.retry_after or 0))
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except Exception as e:  # noqa: BLE001 - a bug here must not end the sender
                self.stats.failures += 1
                self._fail(ReporterError(f"{type(e).__name__}: {e}; {_lost(items)}", "client-error",
                                         tuple(k for k, _ in items)))
                return
            self.stats.sent += len(items) - len(refused)
            if refused:
                self._refused(refused)
            return

    def _get_transport(self):
        if self._transport is None:
            if self.target.is_amqp:
                from .amqp import AmqpTransport

                self._transport = AmqpTransport(self.target.url, self.target.exchange, self.timeout)
            else:
                from .rest import RestTransport

                self._transport = RestTransport(self.target.url, self.token, self.timeout)
        return self._transport

    def _fail(self, error: ReporterError) -> None:
        with self._lock:
            self.stats.lost += len(error.keys)
            self._errors.append(error)

    def _refused(self, refused: list[Refusal]) -> None:
        first = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        self._fail(ReporterError(f"update of {first.key} refused: {first.code}: {first.message}{more}",
                                 first.code, tuple(r.key for r in refused)))


def _lost(items: list[tuple[str, dict]]) -> str:
    keys = [k for k, _ in items]
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"update{'s' if len(keys) > 1 else ''} of {shown} lost"
