"""`sca-progress post` and `sca-progress get`: report and read progress from a shell.

    sca-progress post _portal.job123.stage_input --progress 0.5 --msg "Staging file 3 of 6"
    sca-progress post _portal.job123.stage_input progress=0.5 files=6     (the same as NAME=VALUE)
    sca-progress get _portal.job123 --depth 2          (a readable tree; --json for the JSON)

Both take ``--url`` (default ``$SCA_PROGRESS_URL``, which may end in
``/status/<key>``: the key may then be left out) and ``--token`` (default
``$SCA_PROGRESS_TOKEN``).  ``post`` also works with an ``amqp://`` URL.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from urllib.parse import quote

import orjson

from .config import SCHEMES_REASON, BadUrl, resolve
from .errors import ReporterError

#: Libraries whose own log lines repeat, less clearly, what a command says when it fails.
QUIET_LOGGERS = ("aiormq", "aio_pika")


def parse_field(text: str) -> tuple[str, object]:
    """``name=value``: the value as JSON when it is JSON (0.5, true, null, "3", {...}), else as text."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    return name, value


def _key_and_fields(items: list[str], default_key: str | None) -> tuple[str, dict]:
    key = default_key
    if items and "=" not in items[0]:
        key, items = items[0], items[1:]
    if not key:
        raise SystemExit("sca-progress: give a KEY (or a SCA_PROGRESS_URL ending in /status/<key>)")
    fields = {}
    for item in items:
        try:
            name, value = parse_field(item)
        except argparse.ArgumentTypeError as e:
            raise SystemExit(f"sca-progress: {e}") from None
        fields[name] = value
    return key, fields


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help="the service: http(s)://host:port (or .../status/<key>), or amqp(s):// for post "
                             "($SCA_PROGRESS_URL; default http://127.0.0.1:8080)")
    parser.add_argument("--token", default=None, help="bearer token ($SCA_PROGRESS_TOKEN)")


def add_post(subparsers) -> argparse.ArgumentParser:
    """Register `post`: one update of one node."""
    parser = subparsers.add_parser(
        "post", help="post one update: sca-progress post KEY progress=0.5 msg=...",
        description="Post one update of KEY. Each NAME=VALUE is a field; a VALUE that is JSON "
                    "(0.5, true, null, \"42\", {...}) is sent as such, anything else as text. "
                    "null removes a field. Exits 1 when the update was refused (the error code is "
                    "printed on stderr), 2 when the service could not be reached or --url is not a "
                    "service URL.")
    parser.add_argument("items", nargs="*", metavar="[KEY] NAME=VALUE", help="the key, then the fields")
    parser.add_argument("--progress", type=float, default=None, help="progress, 0 to 1")
    parser.add_argument("--msg", default=None, help="the message")
    parser.add_argument("--status", default=None, help="the status (running, finished, failed, ...)")
    parser.add_argument("--weight", type=float, default=None, help="the node's weight in its parent")
    parser.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                        help="any other field (repeatable; a VALUE that is JSON is sent as such)")
    _common(parser)
    parser.add_argument("--exchange", default=None, help="AMQP exchange (default progress)")
    parser.add_argument("--retries", type=int, default=2, help="retries when the service is unreachable (2)")
    parser.set_defaults(func=run_post)
    return parser


def add_get(subparsers) -> argparse.ArgumentParser:
    """Register `get`: a node (and its subtree) as a readable tree, or JSON."""
    parser = subparsers.add_parser("get", help="print a node and its subtree (REST)",
                                   description="Print GET /status/KEY as a tree (bars, statuses, counts, "
                                               "ETA), or with --json as JSON. Exits 1 on an error answer "
                                               "(printed on stderr with its code), 2 when unreachable.")
    parser.add_argument("key", nargs="?", default=None, help="the key (default: the one in the URL; "
                                                             "none: the top-level listing)")
    parser.add_argument("--depth", type=int, default=1, help="levels to load: 1 is the node alone (default)")
    parser.add_argument("--limit", type=int, default=None, help="children per page of a wide node")
    parser.add_argument("--json", action="store_true", help="the answer's JSON instead of a tree")
    parser.add_argument("--compact", action="store_true", help="with --json: one line instead of indented JSON")
    _common(parser)
    parser.set_defaults(func=run_get)
    return parser


@contextlib.contextmanager
def _quiet_libraries():
    """Silence the AMQP libraries' logging below CRITICAL while a command runs."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _resolve(command: str, args: argparse.Namespace, exchange: str | None = None, http_only: bool = False):
    """resolve() for a command: a bad URL is one line on stderr and exit status 2."""
    try:
        return resolve(args.url, args.token, exchange, url_source="--url")
    except BadUrl as e:
        reason = "must be http(s)://" if http_only and e.reason == SCHEMES_REASON else e.reason
        print(f"sca-progress {command}: bad {e.source} {e.url!r}: {reason}", file=sys.stderr)
        raise SystemExit(2) from None


def run_post(args: argparse.Namespace) -> int:
    with _quiet_libraries():
        return _post(args)


def _post(args: argparse.Namespace) -> int:
    from .reporter import Reporter

    target, _ = _resolve("post", args, args.exchange)
    key, fields = _key_and_fields(args.items + args.field, target.key)
    for name in ("progress", "msg", "status", "weight"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if not fields:
        raise SystemExit("sca-progress post: nothing to post: give --progress, --msg, --status or NAME=VALUE")
    reporter = Reporter(key, args.url, token=args.token, exchange=args.exchange, rate=0,
                        retries=args.retries, flush_timeout=None, raise_errors=True)
    try:
        reporter.update(**fields)
        reporter.close()
    except ReporterError as e:
        print(f"sca-progress post: {e}", file=sys.stderr)
        return 2 if e.code == "unreachable" else 1
    return 0


def run_get(args: argparse.Namespace) -> int:
    import asyncio

    target, token = _resolve("get", args, http_only=True)
    if target.is_amqp:
        raise SystemExit("sca-progress get: reading needs the service's http(s):// URL, not an AMQP one")
    key = args.key or target.key
    status, body = asyncio.run(_get(target.url, token, key, args.depth, args.limit))
    if status is None:
        print(f"sca-progress get: {body}", file=sys.stderr)
        return 2
    if status != 200:
        from .rest import error_of

        code, message = error_of(status, body)
        print(f"sca-progress get: {status} {code}: {message}", file=sys.stderr)
        return 1
    data = orjson.loads(body)
    if args.json or args.compact:
        sys.stdout.write(orjson.dumps(data, option=0 if args.compact else orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    from rich.console import Console

    from .tree_view import render_tree

    Console().print(render_tree(data))
    return 0


async def _get(base: str, token: str | None, key: str | None, depth: int, limit: int | None):
    from .http import HttpConnection, HttpError

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = "/status" + (f"/{quote(key, safe='.:@~_-')}" if key else "") + f"?depth={depth}"
    if limit is not None:
        path += f"&limit={limit}"
    http = HttpConnection(base, headers=headers)
    try:
        response = await http.request("GET", path)
    except HttpError as e:
        return None, f"GET {base.rstrip('/')}{path}: {e}"
    finally:
        await http.close()
    return response.status, response.body
