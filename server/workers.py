"""``serve --workers N``: N server processes sharing one listening socket.

The first process binds the HTTP socket (and starts the embedded Redis, when
no --redis-url is given), then forks the workers and supervises them: each
worker is a whole server (its own event loop, Redis and AMQP connections)
accepting from the shared socket, so the kernel spreads connections over
them.  Live feeds cross processes through Redis pub/sub, as they cross
hosts.  A worker that dies is started again; SIGTERM or SIGINT stops every
worker (each finishes what it holds), then the embedded Redis.

AMQP intake with several workers is partitioned (server/amqp.py), so one
node's updates are applied by one process at a time, in order.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import replace

import uvloop

from sca_progress.engine.embedded import EmbeddedRedis, exit_with_parent

from .settings import CANNOT_START, Settings

log = logging.getLogger("sca_progress.workers")

#: Partitions of the AMQP intake when --workers is above 1 and
#: --amqp-partitions is not given: enough to spread over a few hosts' workers.
DEFAULT_PARTITIONS = 16
#: A worker that dies sooner than this after its start is restarted after a
#: growing delay (at most RESTART_DELAY_MAX_S), so a crash loop does not spin.
STABLE_AFTER_S = 10.0
RESTART_DELAY_MAX_S = 30.0


def worker_count(raw: str) -> int:
    if raw == "auto":
        return os.cpu_count() or 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise SystemExit(f"--workers: {raw!r} is neither a positive number nor auto")
    return n


def run(settings: Settings, serve, bind, with_demo: bool = False) -> int:
    """Bind, fork worker_count(settings.workers) workers running *serve*, supervise them."""
    count = worker_count(settings.workers)
    if settings.amqp_url and not settings.amqp_partitions:
        settings = replace(settings, amqp_partitions=DEFAULT_PARTITIONS)
    sockets = bind(settings.host, settings.port)
    port = sockets[0].getsockname()[1]
    embedded = None
    try:
        if not settings.redis_url:
            embedded = EmbeddedRedis(settings.data_dir, appendfsync=settings.appendfsync)
            settings = replace(settings, redis_url=embedded.start())
            log.info("no --redis-url: started an embedded Redis under %s (appendfsync %s)",
                     embedded.data_dir, settings.appendfsync)
        supervisor = Supervisor(settings, sockets, count, serve, with_demo)

        def all_ready() -> None:  # every worker serves its routes: say so, once
            log.info("listening on http://%s:%d (%d workers)", settings.host, port, count)
            if embedded is not None:
                embedded.lock.say(f"pid {os.getpid()}, http://{settings.host}:{port}, {count} workers")

        supervisor.start()
        return supervisor.wait(all_ready)
    finally:
        for s in sockets:
            s.close()
        if embedded is not None:
            embedded.stop()


class Supervisor:
    def __init__(self, settings: Settings, sockets, count: int, serve, with_demo: bool) -> None:
        self.settings, self.sockets, self.count = settings, sockets, count
        self.serve, self.with_demo = serve, with_demo
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
        self.delays = [0.0] * count
        self.stopping = False
        self.parent = os.getpid()
        self.failed = False
        # Each worker writes a byte here once it serves its routes (until then
        # the port answers 503 "starting": server/run.py).
        self._ready_r, self._ready_w = os.pipe()
        os.set_blocking(self._ready_r, False)

    def start(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for index in range(self.count):
            self._spawn(index)

    def _on_signal(self, signum, _frame) -> None:
        if not self.stopping:
            log.info("stopping %d workers", len(self.children))
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _spawn(self, index: int, early: bool = True) -> None:
        pid = os.fork()
        if pid == 0:
            self._child(index, early)  # never returns
        self.children[pid] = (index, time.monotonic())
        log.info("worker %d started (pid %d)", index, pid)

    def _child(self, index: int, early: bool) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)  # serve() installs its own in its loop
        exit_with_parent()  # a supervisor killed with -9 leaves no worker behind
        if os.getppid() != self.parent:
            os._exit(0)  # it died before the line above
        code = 0
        try:
            uvloop.run(self.serve(self.settings, self.with_demo and index == 0, sockets=self.sockets,
                                  worker=(index, self.count), ready=lambda: os.write(self._ready_w, b"1"),
                                  early=early))
        except SystemExit as e:  # a refusal already logged (CANNOT_START: the supervisor stops)
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a worker reports, and its supervisor restarts it
            log.exception("worker %d failed", index)
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)

    def wait(self, on_all_ready=None) -> int:
        """Until every worker has exited after a stop; restarts those that die
        before.  Calls *on_all_ready* once, when every worker first serves."""
        restarts: list[tuple[float, int]] = []
        readies = 0
        while self.children or (restarts and not self.stopping):
            if on_all_ready is not None:
                try:
                    readies += len(os.read(self._ready_r, 1024))
                except BlockingIOError:
                    pass
                if readies >= self.count:
                    on_all_ready()
                    on_all_ready = None
            for pid in list(self.children):
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done, status = pid, 0
                if not done:
                    continue
                index, started = self.children.pop(pid)
                if self.stopping:
                    continue
                if os.WIFEXITED(status) and os.WEXITSTATUS(status) == CANNOT_START:
                    log.error("worker %d cannot start as configured (see above): stopping", index)
                    self.failed = True
                    self._on_signal(signal.SIGTERM, None)
                    continue
                how = (f"was killed by signal {-os.waitstatus_to_exitcode(status)}"
                       if os.WIFSIGNALED(status) else f"exited with {os.waitstatus_to_exitcode(status)}")
                ran = time.monotonic() - started
                delay = 0.5 if ran > STABLE_AFTER_S else min(max(1.0, 2 * self.delays[index]), RESTART_DELAY_MAX_S)
                self.delays[index] = delay
                log.warning("worker %d (pid %d) %s after %.0f s; restarting it in %.1f s", index, pid, how, ran, delay)
                restarts.append((time.monotonic() + delay, index))
            now = time.monotonic()
            for due, index in [r for r in restarts if r[0] <= now]:
                restarts.remove((due, index))
                if not self.stopping:
                    self._spawn(index, early=False)  # the others serve meanwhile: it joins when ready
            time.sleep(0.1)
        return CANNOT_START if self.failed else 0
