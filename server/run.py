"""Running one server process: bind, wait for Redis while answering "starting",
serve until SIGTERM or SIGINT, then stop cleanly (``sca-progress serve``)."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal

import tornado.netutil

from . import demo
from .app import http_server, make_app, metrics_app, starting_app
from .hot_post import front
from .settings import CANNOT_START, Settings

log = logging.getLogger("sca_progress")

#: Most seconds shutdown waits for the requests under way to be answered.
SETTLE_SECONDS = 10.0


def quiet_garbage_collector() -> None:
    """Keep Python's cycle collector from stalling the event loop.

    Under a busy feed (bench.feed --shape hot) full collections took 58-76 ms
    of the loop each, every few seconds: the POST and feed latencies' tail.
    What exists after start-up lives as long as the process, so it is moved
    out of the collector's sight (gc.freeze), and collections run less often:
    the service's garbage dies by reference counting, few cycles are left for
    the collector (bench/README.md, "Live feeds")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)




def bind(host: str, port: int, flag: str = "--port") -> list:
    """Listening sockets on host:port, or one clear line and exit CANNOT_START."""
    try:
        return tornado.netutil.bind_sockets(port, host)
    except OSError as e:
        log.error("cannot listen on %s:%d (%s): %s", host, port, flag, e.strerror or e)
        raise SystemExit(CANNOT_START) from None


async def serve(settings: Settings, with_demo: bool = False, sockets=None, worker=(0, 1), ready=None,
                early: bool = True) -> None:
    """Run until SIGTERM or SIGINT, then stop accepting, finish what is in hand, close.

    With *with_demo*, a simulated job reports to this server once it is listening.
    *sockets*, *worker* and *ready*: the shared listening sockets, (index, count)
    and a callback once serving, of a worker process of --workers
    (server/workers.py).  While the service waits for Redis at start-up, the
    port already answers: /health/live 200, everything else 503 "starting";
    with *early* False (a worker started again while the others serve) it
    takes no connection before it is ready.
    """
    server = http_server(starting_app())
    own = sockets is None
    if own:
        sockets = bind(settings.host, settings.port)
    if early:
        server.add_sockets(sockets)
    try:
        app = await make_app(settings, worker)
    except BaseException:
        server.stop()
        raise
    server.request_callback = front(app)  # the real routes from now on (the hot one first)
    if not early:
        server.add_sockets(sockets)
    quiet_garbage_collector()
    service = app.settings["service"]
    demo_task = metrics_server = None
    try:
        port = sockets[0].getsockname()[1]
        if own:
            log.info("listening on http://%s:%d", settings.host, port)
        else:
            log.info("worker %d of %d serving (pid %d)", worker[0], worker[1], os.getpid())
        if settings.metrics_port:
            metrics_server = http_server(metrics_app(service))
            metrics_port = settings.metrics_port + worker[0]
            metrics_server.add_sockets(bind(settings.host, metrics_port, "--metrics-port"))
            log.info("metrics of this process on http://%s:%d/metrics", settings.host, metrics_port)
        if service.embedded is not None:
            service.embedded.lock.say(f"pid {os.getpid()}, http://{settings.host}:{port}")
        if with_demo:
            demo_task = demo.start_demo(settings.host, port)
        if ready is not None:
            ready()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        if demo_task is not None:
            demo_task.cancel()
        server.stop()
        if metrics_server is not None:
            metrics_server.stop()
        service.draining = True  # answers from now on say Connection: close
        await service.close_feeds()  # streams and websockets end, or the next line would wait for them
        await service.settle(SETTLE_SECONDS)  # requests under way are answered first
        await server.close_all_connections()
        await service.close()
