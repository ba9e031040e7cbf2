"""The one sender behind a reporter tree: merging, throttling, retries.

Updates are queued from any thread and merged per node (later fields win).
One asyncio task sends them in rounds, at most *rate* rounds a second: a
round takes the latest merged state of every node changed since the last
one, in the order of their last change, as one request.  So no node is
sent more than *rate* times a second, and a round never holds one node back
while sending a newer change of another (which would reorder a parent's
own progress and its children's roll-up).  The first change after a quiet
spell goes at once.  ``flush()`` sends what is queued without waiting for
the throttle, so the final state is never held back.  The task runs only
while there is something to send.

A request that fails for a reason that may pass (no answer, 5xx, 429) is
retried with backoff: *retries* times on the initial schedule, then on and
on in the background, at most MAX_BACKOFF apart, until it gets through or
the session is closed.  What is queued meanwhile merges into what waits,
so a long outage costs no memory beyond one state per node.  While the
service is unreachable (a connection failed, or a request failed after its
retries) a flush waits at most *flush_timeout*, and once the outage has
been told (or the retries are spent) it waits for one more attempt at most.
An outage is told once, as a ReporterError that the reporters hand to the
job as a warning (or raise, with ``raise_errors``); so is every update the
service refuses.  Closing gives up on what is still unsent then: those
states count as ``lost``.
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
#: Shortest wait between two attempts once the retries are spent (for backoff=0).
MIN_BACKGROUND_BACKOFF = 0.5


@dataclass
class Stats:
    """Counters of one session."""

    updates: int = 0    # updates queued
    sent: int = 0       # node states delivered (after merging)
    requests: int = 0   # delivery attempts (requests, or AMQP publishing rounds)
    failures: int = 0   # attempts that failed
    lost: int = 0       # node states given up on (unsent at close, or dropped for a bad URL), or refused


@dataclass
class _Pending:
    key: str
    fields: dict
    first_seq: int  # the oldest queued update merged in: also the entry's id in Session._pending


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
    AsyncReporter).  *flush_timeout* bounds how long a flush waits while the
    service is unreachable (None: through the retries).  With *dropping* (why),
    nothing is ever sent: every update queued counts as lost at once.
    """

    def __init__(self, target: Target, token: str | None = None, *, rate: float | None = 2.0,
                 retries: int = 4, backoff: float = 0.5, timeout: float = 10.0,
                 flush_timeout: float | None = 1.0, threaded: bool = False, dropping: str | None = None) -> None:
        if rate is not None and rate < 0:
            raise ValueError("rate must be at least 0 (0 or None: no throttling)")
        if flush_timeout is not None and flush_timeout < 0:
            raise ValueError("flush_timeout must be at least 0 (None: wait through the retries)")
        self.target, self.token = target, token
        self.interval = 1.0 / rate if rate else 0.0
        self.retries, self.backoff, self.timeout = max(0, retries), max(0.0, backoff), timeout
        self.flush_timeout = flush_timeout
        self.threaded = threaded
        self.dropping = dropping
        self.stats = Stats()
        self._lock = threading.Lock()
        # What waits to be sent, in order of arrival, by entry id (the seq of the entry's
        # first update).  A node has one entry, merged into, except that progress posted
        # to a node after an update of one of its descendants (queued later than the
        # node's entry) starts a second entry behind it, so that the round applies them
        # in the order they were made.  A round that could not be sent goes back in
        # front, under what was queued since.
        self._pending: dict[int, _Pending] = {}
        self._latest: dict[str, int] = {}  # key -> the id of its last entry
        self._last_round = -math.inf     # when the last round was taken (monotonic)
        self._seq = 0
        self._kicked = False            # the sender will look at pending soon
        self._inflight_seq = math.inf   # oldest update of the request under way
        self._inflight: list[_Pending] | None = None  # the round under way
        self._errors: list[ReporterError] = []
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._closing = False
        # The state of the connection to the service (on the session's loop).
        self._failures_in_row = 0       # failed attempts since the last success
        self._last_failure: SendError | None = None
        self._retry_at = -math.inf      # no attempt before (monotonic), unless a flush probes
        self._probe = False             # a flush asks for one attempt now, even during a backoff
        self._down = False              # unreachable: a connection failed, or the retries are spent
        self._told = False              # the current outage was handed to the job already
        self._pulse: asyncio.Future | None = None  # resolved after each attempt
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: LoopThread | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._transport = None
        self._finalizer = None

    # -- any thread -----------------------------------------------------------------

    def queue(self, items: list[tuple[str, dict]]) -> None:
        """Merge *items* (key, fields) into what is pending and make sure the sender runs."""
        if self.dropping is not None:
            with self._lock:
                self.stats.updates += len(items)
                self.stats.lost += len(items)
            return
        with self._lock:
            for key, fields in items:
                self._seq += 1
                entry = self._latest.get(key)
                if entry is not None and "progress" in fields and self._descendant_after(key, entry):
                    entry = None  # a second entry, behind the descendant's update
                if entry is not None:
                    self._pending[entry].fields.update(fields)
                else:
                    self._pending[self._seq] = _Pending(key, dict(fields), self._seq)
                    self._latest[key] = self._seq
            self.stats.updates += len(items)
            kick = not self._kicked or (self.threaded and (self._thread is None or not self._thread.alive))
            self._kicked = True
        if kick:
            self._kick_from_anywhere()

    def _descendant_after(self, key: str, entry: int) -> bool:
        """Whether an update of a node below *key* is queued after *entry* (under the lock)."""
        if next(reversed(self._pending)) == entry:
            return False  # the common case, at no cost: nothing is queued after it
        below, after = key + ".", False
        for other, pending in self._pending.items():
            if after and pending.key.startswith(below):
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
            keys = {p.key for p in self._pending.values()}
            keys.update(p.key for p in self._inflight or ())
        return len(keys)

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

    def run_blocking(self, coroutine_function, timeout: float | None = None):
        """Run ``coroutine_function()`` on the session's thread and wait for its result (threaded sessions).

        Nothing to do when the thread never started and nothing is pending, and
        nothing is waited for when called from that thread itself (a finalizer).
        """
        with self._lock:
            loop_thread, pending = self._thread, bool(self._pending)
        if loop_thread is not None and loop_thread.in_thread():
            return None
        if (loop_thread is None or not loop_thread.alive) and not pending:
            return None
        return self.thread().call(coroutine_function(), timeout)

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
        self._waiters, self._pulse = [], None

    # -- on the session's loop ------------------------------------------------------

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name="sca-progress-sender")
        else:
            self._wake.set()

    async def flush(self, closing: bool = False) -> bool:
        """Wait until everything queued so far is sent, or given up on (refused).

        While the service is unreachable, wait *flush_timeout* seconds at most, and
        once the outage was told (or the retries are spent) only for one attempt.
        Returns False when that left updates unsent: they stay queued, and the
        outage is told (once) as an error; with *closing*, as lost.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._bind(loop)
        with self._lock:
            target = self._seq
        if self._outstanding() > target:
            return True
        started = loop.time()
        future = loop.create_future()
        self._waiters.append((target, future))
        self._probe = True  # one attempt at once, even in a pause between retries
        self._kick()
        try:
            while not future.done():
                timeout = None
                if self._down and self.flush_timeout is not None:
                    timeout = started + self.flush_timeout - loop.time()
                    if timeout <= 0:
                        break
                if self._pulse is None or self._pulse.done():
                    self._pulse = loop.create_future()
                pulse = self._pulse
                await asyncio.wait([future, pulse], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not future.done() and pulse.done() and self._down and self._spent():
                    break  # this attempt was the last one worth waiting for
            if future.done():
                return True
            self._tell_outage(final=closing)
            return False
        finally:
            if not future.done():
                future.cancel()  # no longer waited for: rounds are not forced for it
            self._probe = False

    async def aclose(self) -> None:
        """Flush, then release the connection.  What the flush leaves unsent (the service
        unreachable) is given up on.  The session may be used again afterwards."""
        self._closing = True
        try:
            while await self.flush(closing=True):
                with self._lock:
                    if not self._pending and self._inflight is None:
                        break
            else:
                await self._stop_task()
                with self._lock:
                    dropped = len({p.key for p in self._pending.values()})
                    self._pending.clear()
                    self._latest.clear()
                    self._kicked = False
                    self.stats.lost += dropped
                self._settle()
            await self._stop_task()
        finally:
            self._closing = False
            transport, self._transport = self._transport, None
            if transport is not None:
                await transport.close()

    async def _stop_task(self) -> None:
        """End the sender (a round under way goes back to pending); the next queue() starts another."""
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        await asyncio.wait([task])  # (not `await task`: its CancelledError is not ours to swallow)
        with self._lock:
            self._kicked = False

    def _spent(self) -> bool:
        """Whether waiting for more attempts is not worth it: the retries are spent, or
        the outage was told already."""
        return self._failures_in_row > self.retries or self._told

    def _tell_outage(self, final: bool) -> None:
        """Hand the current outage to the job, once: what failed, and what is unsent."""
        if self._told or self._last_failure is None:
            return
        with self._lock:
            keys = [p.key for p in self._inflight or ()] + [p.key for p in self._pending.values()]
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        self._told = True
        tries = f" after {self._failures_in_row} attempts" if self._failures_in_row > 1 else ""
        what = _lost(keys) if final else f"{_updates_of(keys)} not sent yet (retrying in the background)"
        with self._lock:
            self._errors.append(ReporterError(f"{self._last_failure}{tries}; {what}", self._last_failure.code,
                                              tuple(keys)))

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

    def _pick(self, now: float) -> tuple[list[_Pending], float | None]:
        """Take a round, if one is due: (the entries, when the next is due if none is)."""
        forced = max((t for t, f in self._waiters if not f.done()), default=0)
        if self._closing:
            forced = math.inf
        with self._lock:
            if not self._pending:
                self._kicked = False
                return [], None
            oldest = min(p.first_seq for p in self._pending.values())
            due = self._last_round + self.interval
            if now < due and not (forced and oldest <= forced):
                return [], due  # _kicked stays set: the timer will look, queue() need not wake us
            if now < self._retry_at and not self._probe:
                return [], self._retry_at  # pausing between attempts
            self._probe = False
            self._kicked = False
            items = list(self._pending.values())
            self._pending.clear()
            self._latest.clear()
            self._last_round = now
            self._inflight_seq, self._inflight = oldest, items
        return items, None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = time.monotonic()
            items, next_due = self._pick(now)
            if items:
                try:
                    await self._deliver_round(items)
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

    async def _deliver_round(self, items: list[_Pending]) -> None:
        """Send a round, MAX_BATCH at a time; what could not be sent (or was not, when
        cancelled) goes back to pending."""
        done = 0
        try:
            while done < len(items):
                if not await self._attempt(items[done:done + MAX_BATCH]):
                    break
                done += MAX_BATCH
                with self._lock:
                    self._inflight = items[done:]
        finally:
            with self._lock:
                self._inflight = None
                if done < len(items):
                    self._requeue(items[done:])

    def _requeue(self, items: list[_Pending]) -> None:
        """Put entries that were not sent back in front of what was queued since, which
        merges into them from now on (unless it has entries of its own).  Under the lock."""
        newer, newer_keys = self._pending, set(self._latest)
        self._pending = {p.first_seq: p for p in items}
        self._pending.update(newer)
        for p in items:
            if p.key not in newer_keys:
                self._latest[p.key] = p.first_seq  # the last of its entries, when it has several

    async def _attempt(self, entries: list[_Pending]) -> bool:
        """One request; False when it failed and is worth trying again."""
        items = [(p.key, p.fields) for p in entries]
        keys = tuple(k for k, _ in items)
        self.stats.requests += 1
        try:
            refused = await self._get_transport().send(items)
        except SendError as e:
            self.stats.failures += 1
            if not e.retryable:  # refused: yet an answer, so the service is there
                self._fail(ReporterError(f"{e}; {_lost(keys)}", e.code, keys))
                self._answered()
                return True
            self._failed_attempt(e)
            return False
        except Exception as e:  # noqa: BLE001 - a bug here must not end the sender
            self.stats.failures += 1
            self._fail(ReporterError(f"{type(e).__name__}: {e}; {_lost(keys)}", "client-error", keys))
            self._pulse_now()
            return True
        self.stats.sent += len(items) - len(refused)
        if refused:
            self._refused(refused)
        self._answered()
        return True

    def _answered(self) -> None:
        """The service answered: whatever outage there was is over."""
        self._failures_in_row, self._last_failure, self._retry_at = 0, None, -math.inf
        self._down = self._told = False
        self._pulse_now()

    def _failed_attempt(self, e: SendError) -> None:
        """Note a failed attempt: when to try again, whether the service is down, and
        (once the retries are spent) tell the outage."""
        self._failures_in_row += 1
        self._last_failure = e
        n = self._failures_in_row
        backoff = self.backoff if n <= self.retries else max(self.backoff, MIN_BACKGROUND_BACKOFF)
        delay = min(backoff * 2 ** min(n - 1, 30), MAX_BACKOFF)
        self._retry_at = time.monotonic() + max(delay, e.retry_after or 0)
        if e.code == "unreachable":
            self._down = True  # no answer at all: flushes stop waiting long for one
        if n > self.retries:
            self._down = True
            self._tell_outage(final=self._closing)
        self._pulse_now()

    def _pulse_now(self) -> None:
        pulse, self._pulse = self._pulse, None
        if pulse is not None and not pulse.done():
            pulse.set_result(None)

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


def _updates_of(keys) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    return f"update{'s' if len(keys) > 1 else ''} of {shown}"


def _lost(keys) -> str:
    return f"{_updates_of(keys)} lost"
