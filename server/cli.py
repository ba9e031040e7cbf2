"""The ``sca-progress`` command; ``serve`` is where the server starts and stops."""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

import tornado.httpserver
import tornado.netutil
import uvloop

from sca_progress.client import commands as client_commands
from sca_progress.client.watch import add_watch
from sca_progress.engine.embedded import DataDirInUse
from sca_progress.engine.errors import StoredFormatError

from . import demo, logs, workers
from .app import http_server, make_app, metrics_app
from .settings import Settings

log = logging.getLogger("sca_progress")


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


async def serve(settings: Settings, with_demo: bool = False, sockets=None, worker=(0, 1)) -> None:
    """Run until SIGTERM or SIGINT, then stop accepting, finish what is in hand, close.

    With *with_demo*, a simulated job reports to this server once it is listening.
    *sockets* and *worker*: the shared listening sockets and (index, count) of a
    worker process of --workers (server/workers.py).
    """
    app = await make_app(settings, worker)
    quiet_garbage_collector()
    service = app.settings["service"]
    server = http_server(app)
    demo_task = metrics_server = None
    try:
        if sockets is None:
            sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
            log.info("listening on http://%s:%d", settings.host, sockets[0].getsockname()[1])
        else:
            log.info("worker %d of %d serving (pid %d)", worker[0], worker[1], os.getpid())
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        if settings.metrics_port:
            metrics_server = tornado.httpserver.HTTPServer(metrics_app(service))
            metrics_port = settings.metrics_port + worker[0]
            metrics_server.add_sockets(tornado.netutil.bind_sockets(metrics_port, settings.host))
            log.info("metrics of this process on http://%s:%d/metrics", settings.host, metrics_port)
        if service.embedded is not None:
            service.embedded.lock.say(f"pid {os.getpid()}, http://{settings.host}:{port}")
        if with_demo:
            demo_task = demo.start_demo(settings.host, port)
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
        await service.close_feeds()  # streams and websockets end, or the next line would wait for them
        await server.close_all_connections()
        await service.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sca-progress", description="Hierarchical job-progress service")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the service (REST API)")
    Settings.add_arguments(p_serve)
    p_serve.add_argument("--demo", action="store_true",
                         help="also run a simulated job against this server once it is up (see `demo`)")
    demo.add_arguments(sub.add_parser("demo", help="run a simulated job against a running service (REST)"))
    client_commands.add_post(sub)
    client_commands.add_get(sub)
    add_watch(sub)
    args = parser.parse_args(argv)
    settings = Settings.load(args)
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "serve":
        try:
            if workers.worker_count(settings.workers) > 1:
                return workers.run(settings, serve, with_demo=args.demo)
            uvloop.run(serve(settings, with_demo=args.demo))
        except StoredFormatError as e:
            log.error("%s", e.message)
            return 2
        except DataDirInUse as e:
            log.error("%s", e)
            return 2
    elif args.command == "demo":
        return demo.main(args)
    elif args.command in ("post", "get", "watch"):
        return args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
