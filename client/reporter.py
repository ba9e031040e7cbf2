"""Reporters: what a job uses to post its progress.

``Reporter`` blocks nowhere but in ``flush()``/``close()``: updates are queued
and sent by a private event loop in a daemon thread.  ``AsyncReporter`` is
the same on the caller's event loop.  Both share one implementation of
merging, throttling and retries (session.py) and either transport: REST or
AMQP, by the URL's scheme.

    with Reporter("_portal.job123") as job:            # running ... finished / failed
        stage = job.child("stage_input", weight=10)
        for f in stage.track(files):                    # progress i/len(files), then 1
            stage_file(f)

Failures to report never stop the job: they come back as a ReporterWarning
at the reporter's next call (or as a ReporterError with ``raise_errors=True``).
While the service is unreachable, flush points wait ``flush_timeout`` at most
(and the outage is told once); a URL that is no service URL at all makes a
reporter that drops its updates, with one warning.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import sys
import time
import warnings
import weakref
from collections.abc import AsyncIterable, Iterable, Mapping

from .config import BadUrl, Target, resolve
from .errors import ReporterError, ReporterWarning
from .session import Session

#: How long the exit hook waits for a Reporter that was never closed.
EXIT_FLUSH_S = 15.0


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


#: "Not given" for update()'s named fields (None sends null: it removes the field).
UNSET = _Unset()


def now_ms() -> int:
    """Epoch milliseconds: the ``ts`` of an update made now."""
    return time.time_ns() // 1_000_000


def end_fields(exc: BaseException | None) -> dict:
    """The fields that close a step: finished, failed (with the exception's message) or canceled."""
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        exc = None
    if exc is None:
        return {"progress": 1, "status": "finished"}
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError, GeneratorExit)):
        return {"status": "canceled"}
    if isinstance(exc, SystemExit):
        return {"status": "failed", "msg": f"exited with status {exc.code}"}
    return {"status": "failed", "msg": str(exc) or type(exc).__name__}


class _Base:
    """What both flavours share: keys, fields, errors."""

    _threaded = False

    def __init__(self, key: str | None = None, url: str | None = None, *, token: str | None = None,
                 exchange: str | None = None, rate: float | None = 2.0, retries: int = 4,
                 backoff: float = 0.5, timeout: float = 10.0, flush_timeout: float | None = 1.0,
                 raise_errors: bool = False, _session: Session | None = None) -> None:
        if _session is None:
            options = {"rate": rate, "retries": retries, "backoff": backoff, "timeout": timeout,
                       "flush_timeout": flush_timeout, "threaded": self._threaded}
            try:
                target, token = resolve(url, token, exchange)
            except BadUrl as e:
                # A typo in the environment must not fail the job: report nothing, say so once.
                if raise_errors:
                    raise ReporterError(str(e), "bad-url") from None
                warnings.warn(f"progress not reported: {e}; this reporter drops its updates",
                              ReporterWarning, stacklevel=_outside_stacklevel())
                _session = Session(Target("", e.url), token, dropping=str(e), **options)
                key = key or "?"
            else:
                key = key or target.key
                _session = Session(target, token, **options)
            self._root = True
        else:
            self._root = False
        if not key:
            raise ValueError("a reporter needs a key: pass one, or set SCA_PROGRESS_URL to .../status/<key>")
        self.key = key
        self.session = _session
        self.raise_errors = raise_errors

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key!r}, url={self.session.target.url!r})"

    @property
    def stats(self):
        """Counters of the session (shared by a reporter and its children): updates, sent, requests, …"""
        return self.session.stats

    def update(self, progress=UNSET, msg=UNSET, status=UNSET, **fields) -> None:
        """Queue an update of this node; it is sent within the throttle's interval.

        *progress* is 0..1; any other field (``weight``, ``name``, your own) goes
        as given, and None removes a field.  ``ts`` is set to now unless given.
        """
        self._surface()
        self._queue(self._fields(progress, msg, status, fields))

    def _queue(self, fields: dict) -> None:
        fields.setdefault("ts", now_ms())
        self.session.queue([(self.key, fields)])

    def _fields(self, progress, msg, status, fields: dict) -> dict:
        out = {}
        if progress is not UNSET:
            out["progress"] = progress
        if msg is not UNSET:
            out["msg"] = msg
        if status is not UNSET:
            out["status"] = status
        out.update(fields)
        return out

    def _child_key(self, name: str) -> str:
        return f"{self.key}.{name}"

    def child(self, name: str, weight: float | None = None, **fields):
        """A reporter for the sub-key ``<key>.<name>`` (same connection and throttle).

        With *weight* (how much it counts in this node) or other fields, they
        are posted on the child at once.
        """
        child = type(self)(self._child_key(name), _session=self.session, raise_errors=self.raise_errors)
        if weight is not None:
            fields["weight"] = weight
        if fields:
            child.update(**fields)
        return child

    def children(self, names: Iterable[str], weight: float | Mapping[str, float] | None = None,
                 **fields) -> list:
        """Announce pending sequential steps: ``progress: 0, status: waiting`` on each, in one batch.

        *weight* is one weight for all, or a mapping name -> weight; *fields*
        (``msg``, …) go on every step.  Returns the children's reporters, in order.
        """
        self._surface()
        ts = now_ms()
        reporters, items = [], []
        for name in names:
            item = {"progress": 0, "status": "waiting", **fields, "ts": fields.get("ts", ts)}
            w = weight.get(name) if isinstance(weight, Mapping) else weight
            if w is not None:
                item["weight"] = w
            child = type(self)(self._child_key(name), _session=self.session, raise_errors=self.raise_errors)
            reporters.append(child)
            items.append((child.key, item))
        self.session.queue(items)
        return reporters

    def _surface(self, quiet: bool = False, stacklevel: int = 3) -> None:
        """Hand the session's errors to the caller: raised (raise_errors, unless *quiet*) or
        warned (*stacklevel* frames up: the job's line that called the reporter)."""
        errors = self.session.take_errors()
        if not errors:
            return
        if self.raise_errors and not quiet:
            first = errors[0]
            if len(errors) > 1:
                first.args = (f"{first} (and {len(errors) - 1} more failures)",)
            raise first
        for error in errors:
            warnings.warn(f"progress not reported: {error}", ReporterWarning, stacklevel=stacklevel)


class Reporter(_Base):
    """A blocking reporter for the node *key*; see the module's docstring.

    *url* (default ``$SCA_PROGRESS_URL``, else http://127.0.0.1:8080) is the
    service's base URL (or .../status/<key>, whose key is then the default),
    or an ``amqp://`` broker URL; *token* (default ``$SCA_PROGRESS_TOKEN``) a
    bearer token for REST; *exchange* the AMQP exchange (default
    ``progress``).  *rate* is the most requests a second this reporter and
    its children send, so the most updates a second of any one node (0 or
    None: no limit); a failed request is tried *retries* more times,
    waiting *backoff* seconds, doubling, then on in the background (at
    most 10 s apart) until it gets through or the reporter is closed; each
    request may take *timeout* seconds.  While the service is unreachable,
    a flush point (flush(), close(), the ends of ``with``, ``running()`` and
    ``track()``) waits *flush_timeout* seconds at most (None: through the
    retries), and only for one attempt once the outage has been told; what
    close() cannot send then is lost (``stats.lost``).  An outage is told
    once, not at every flush.  With *raise_errors*, failures raise
    ReporterError instead of warning (``bad-url`` for a URL that is not
    http(s):// or amqp(s)://, which otherwise makes a reporter that drops
    its updates).
    """

    _threaded = True

    def __init__(self, key: str | None = None, url: str | None = None, **options) -> None:
        super().__init__(key, url, **options)
        if self._root:
            _live.add(self.session)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued so far, ignoring the throttle; wait until sent or given up on."""
        self._wait(False, timeout)
        self._surface()

    def close(self, timeout: float | None = None) -> None:
        """Flush; on the reporter made with a key (not a child), also release the connection
        and the thread.  It may still be used afterwards: it starts again."""
        self._wait(True, timeout)
        self._surface()

    def _wait(self, close: bool, timeout: float | None = None) -> None:
        session = self.session
        try:
            session.run_blocking(session.aclose if close and self._root else session.flush, timeout)
        except concurrent.futures.TimeoutError:
            message = f"{self.key}: updates still unsent after {timeout:g} s ({session.pending} nodes pending)"
            if self.raise_errors:
                raise ReporterError(message, "timeout") from None
            warnings.warn(f"progress not reported: {message}", ReporterWarning, stacklevel=3)
        finally:
            if close and self._root:
                session.stop_thread()

    def _finish(self, exc: BaseException | None, close: bool) -> None:
        """The step's last update (end_fields), then flush or close.  While the job's own
        exception propagates, reporting problems only warn."""
        self._queue(end_fields(exc))
        if exc is None:
            self._wait(close)
            self._surface(stacklevel=4)
            return
        try:
            self._wait(close)
        finally:
            self._surface(quiet=True, stacklevel=4)

    @contextlib.contextmanager
    def running(self, msg: str | None = None):
        """``with r.running():`` status running, then finished (progress 1), failed (msg = the
        exception's message) or canceled; exceptions go on.  Flushes on the way out."""
        self.update(status="running", **({"msg": msg} if msg is not None else {}))
        try:
            yield self
        except BaseException as e:
            self._finish(e, close=False)
            raise
        self._finish(None, close=False)

    def __enter__(self) -> Reporter:
        self.update(status="running")
        return self

    def __exit__(self, typ, exc, tb) -> None:
        self._finish(exc, close=True)

    def track(self, iterable: Iterable, total: int | None = None, msg: str | None = None, *,
              close: bool = False):
        """Yield the items of *iterable*, reporting progress done/total as they are consumed:
        running, then progress 1 and finished at the end (failed if the iterable raises;
        a loop left early leaves what was reported).  *total* defaults to len(iterable);
        with *close*, the reporter is closed at the end."""
        total = _total(iterable, total)
        self.update(status="running", **_start_fields(total, msg))
        iterator = iter(iterable)
        done = 0
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                break
            except BaseException as e:
                self._finish(e, close)
                raise
            try:
                yield item
            except GeneratorExit:
                try:
                    self._wait(close)
                finally:
                    self._surface(quiet=True)
                raise
            done += 1
            if total:
                self.update(progress=min(done / total, 1.0))
        self._finish(None, close)


class AsyncReporter(_Base):
    """The asyncio reporter: the same API as Reporter, with ``await r.flush()``,
    ``await r.aclose()``, ``async with``, and ``async for x in r.track(...)``.
    ``update()``, ``child()`` and ``children()`` are plain calls that queue;
    the sending runs on the event loop that calls them."""

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued so far, ignoring the throttle; wait until sent or given up on."""
        await self._wait(False, timeout)
        self._surface()

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush; on the reporter made with a key (not a child), also release the connection."""
        await self._wait(True, timeout)
        self._surface()

    async def _wait(self, close: bool, timeout: float | None = None) -> None:
        session = self.session
        try:
            await asyncio.wait_for((session.aclose if close and self._root else session.flush)(), timeout)
        except asyncio.TimeoutError:
            message = f"{self.key}: updates still unsent after {timeout:g} s ({session.pending} nodes pending)"
            if self.raise_errors:
                raise ReporterError(message, "timeout") from None
            warnings.warn(f"progress not reported: {message}", ReporterWarning, stacklevel=3)

    async def _finish(self, exc: BaseException | None, close: bool) -> None:
        self._queue(end_fields(exc))
        if exc is None:
            await self._wait(close)
            self._surface(stacklevel=4)
            return
        try:
            await self._wait(close)
        finally:
            self._surface(quiet=True, stacklevel=4)

    @contextlib.asynccontextmanager
    async def running(self, msg: str | None = None):
        """``async with r.running():`` as Reporter.running."""
        self.update(status="running", **({"msg": msg} if msg is not None else {}))
        try:
            yield self
        except BaseException as e:
            await self._finish(e, close=False)
            raise
        await self._finish(None, close=False)

    async def __aenter__(self) -> AsyncReporter:
        self.update(status="running")
        return self

    async def __aexit__(self, typ, exc, tb) -> None:
        await self._finish(exc, close=True)

    async def track(self, iterable: Iterable | AsyncIterable, total: int | None = None,
                    msg: str | None = None, *, close: bool = False):
        """As Reporter.track, for an iterable or an async iterable: ``async for x in r.track(...)``."""
        total = _total(iterable, total)
        self.update(status="running", **_start_fields(total, msg))
        iterator = _aiter(iterable)
        done = 0
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                break
            except BaseException as e:
                await self._finish(e, close)
                raise
            try:
                yield item
            except GeneratorExit:
                try:
                    await self._wait(close)
                finally:
                    self._surface(quiet=True)
                raise
            done += 1
            if total:
                self.update(progress=min(done / total, 1.0))
        await self._finish(None, close)


_HERE = os.path.dirname(os.path.abspath(__file__))


def _outside_stacklevel() -> int:
    """The stacklevel of warnings.warn that names the first caller outside this package."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _HERE:
        frame, level = frame.f_back, level + 1
    return level


def _total(iterable, total: int | None) -> int | None:
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            pass
    return total


def _start_fields(total: int | None, msg: str | None) -> dict:
    fields = {"progress": 0} if total else {}
    if msg is not None:
        fields["msg"] = msg
    return fields


async def _aiter(iterable):
    if isinstance(iterable, AsyncIterable):
        async for item in iterable:
            yield item
    else:
        for item in iterable:
            yield item


def track(iterable: Iterable, key: str | None = None, total: int | None = None, msg: str | None = None, *,
          reporter: Reporter | None = None, **options):
    """tqdm-style: ``for f in track(files, key="_portal.job123.stage_input"): ...``

    Yields the items of *iterable* while reporting progress done/total (throttled)
    on *key* (or on *reporter*), then progress 1 and finished; see Reporter.track.
    A reporter made here from *key* and *options* is closed at the end.
    """
    if reporter is not None:
        return reporter.track(iterable, total, msg)
    return Reporter(key, **options).track(iterable, total, msg, close=True)


#: Sessions of blocking reporters, flushed when the interpreter exits.
_live: weakref.WeakSet[Session] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Send what reporters that were never closed still hold (the job's last updates)."""
    for session in list(_live):
        try:
            session.run_blocking(session.aclose, EXIT_FLUSH_S)
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        finally:
            session.stop_thread()
        for error in session.take_errors():
            warnings.warn(f"progress not reported: {error}", ReporterWarning, stacklevel=2)
