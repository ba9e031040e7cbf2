"""The ``sca-progress`` command: serve, demo, and the clients' post, get and watch.

Only what a command needs is imported: post, get and watch start in a
fraction of the server's import time."""
from __future__ import annotations

import argparse
import logging
import sys

from sca_progress.client import commands as client_commands
from sca_progress.client.watch import add_watch

from . import demo, logs
from .settings import Settings

log = logging.getLogger("sca_progress")


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
        import uvloop

        from sca_progress.engine.embedded import DataDirInUse
        from sca_progress.engine.errors import StoredFormatError

        from . import workers
        from .run import bind, serve

        try:
            if workers.worker_count(settings.workers) > 1:
                return workers.run(settings, serve, bind, with_demo=args.demo)
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
