"""The ``sca-progress`` command; ``serve`` is where the server starts and stops."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import tornado.httpserver
import tornado.netutil
import uvloop

from .app import make_app
from .settings import Settings

log = logging.getLogger("sca_progress")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then stop accepting, finish what is in hand, close."""
    app = await make_app(settings)
    service = app.settings["service"]
    server = tornado.httpserver.HTTPServer(app, xheaders=True)
    try:
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        log.info("listening on http://%s:%d", settings.host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
    finally:
        server.stop()
        await service.close_feeds()  # streams and websockets end, or the next line would wait for them
        await server.close_all_connections()
        await service.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sca-progress", description="Hierarchical job-progress service")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the service (REST API)")
    Settings.add_arguments(p_serve)
    args = parser.parse_args(argv)
    settings = Settings.load(args)
    logging.basicConfig(
        level=settings.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
