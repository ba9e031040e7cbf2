"""`sca-progress watch KEY`: a node and its subtree, live in the terminal.

    sca-progress watch _portal.job123 --url http://127.0.0.1:8080 --depth 3
    python -m sca_progress.client.watch _portal.job123      # the same, standalone

How it works:

- A reader thread follows ``GET /events/<key>`` (Server-Sent Events, over
  http.client).  Every (re)connection starts with a ``snapshot``; on each one
  the thread reads the tree afresh with ``GET /status/<key>?depth=N&limit=L``
  (the snapshot itself is two levels deep), then passes on the ``update`` and
  ``removed`` events that follow.  A change older than what the tree already
  shows (by ``update_time``) is dropped, so the read and the stream can
  overlap safely.
- The main thread keeps the tree, applies the changes of nodes within the
  depth, and redraws it in place with rich's Live, at most once per
  ``--interval`` (and once a second, so elapsed times and ETAs count on the
  server's clock, ``_now``).
- When the stream drops (or no heartbeat comes for READ_TIMEOUT_S), the view
  says "reconnecting…" and the thread retries with capped exponential backoff.
  A key that does not exist yet reads "waiting for <key>…" until it appears.
- ``--token`` (or SCA_PROGRESS_TOKEN) is sent as ``Authorization: Bearer`` on
  both requests; the events endpoint accepts the header as well as a ticket.
  A URL that is not http(s)://, or a 400/401/403 (or an ``error`` event,
  such as an expired token) prints one line and exits with 2.  Ctrl-C exits
  with 0, the terminal restored.
"""
from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlencode, urlsplit

import orjson

if TYPE_CHECKING:
    import http.client

try:
    import termios
except ImportError:  # not a POSIX system: the terminal is left as it is
    termios = None

DEFAULT_URL = "http://127.0.0.1:8080"
#: The server sends a heartbeat every 15 s: three missed ones mean the stream is dead.
READ_TIMEOUT_S = 45.0
CONNECT_TIMEOUT_S = 10.0
#: Reconnection delays: doubling from the first to the last.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0
#: The server's most children per page, and its deepest read.
MAX_LIMIT, MAX_DEPTH = 10_000, 16
#: Fields of a node that describe where it sits in the tree, kept by the
#: watcher: the feed's node snapshots do not carry them.
STRUCTURAL = ("_children", "_children_total", "_children_next", "tasks")
#: HTTP answers that retrying will not change.
FATAL_STATUSES = {400, 401, 403, 404, 405, 406, 410, 413, 414, 431}


class Fatal(Exception):
    """A problem retrying will not fix: bad key, bad URL, refused credentials."""


class Terminated(BaseException):
    """SIGTERM, unwinding like Ctrl-C does so the terminal is restored."""


# -- where the service is ------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    prefix: str  # a path before /status (a service behind a proxy), without a trailing /

    @property
    def base(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{port}{self.prefix}"

    def connect(self) -> http.client.HTTPConnection:
        import http.client  # here, not at the top: `sca-progress post` and `get` need none of it

        if self.scheme == "https":
            import ssl

            return http.client.HTTPSConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)

    def path(self, route: str, key: str, **query) -> str:
        path = f"{self.prefix}/{route}/{quote(key, safe='~@:')}"
        return path + ("?" + urlencode(query) if query else "")


_ROUTE = re.compile(r"^(?P<prefix>.*?)/(?:status|events|ui)(?:/(?P<key>[^/]*))?/?$")


def parse_url(url: str, source: str = "--url") -> tuple[Endpoint, str | None]:
    """The service behind *url* and the key the URL names, if any.

    Takes a base URL (``http://host:port``, maybe with a path prefix), or one
    ending in ``/status`` or ``/status/<key>`` (``/events/<key>`` and
    ``/ui/<key>`` too).  Anything else (no scheme, another scheme, no host, a
    bad port) raises Fatal: ``bad <source> 'URL': <reason>``."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise Fatal(f"bad {source} {url!r}: must be http(s)://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise Fatal(f"bad {source} {url!r}: bad port") from None
    if not host:
        raise Fatal(f"bad {source} {url!r}: no host")
    path = parts.path.rstrip("/")
    key = None
    m = _ROUTE.match(path)
    if m:
        path = m.group("prefix")
        key = unquote(m.group("key")) if m.group("key") else None
    scheme = parts.scheme.lower()
    return Endpoint(scheme, host, port or (443 if scheme == "https" else 80), path), key


def _error_line(status: int, reason: str, body: bytes) -> str:
    """'401 unauthorized: <message>' from the service's JSON error, or the HTTP reason."""
    try:
        error = orjson.loads(body)["error"]
        return f"{status} {error['code']}: {error['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"{status} {reason}".strip()


# -- the reader thread ------------------------------------------------------------------


class Feed(threading.Thread):
    """Follows the event stream of one key and puts what it learns on *events*:

        ("connected",)                 the stream is open
        ("tree", node | None, now)     a fresh read, after each snapshot
        ("update", nodes, now)         changed nodes, ancestors first
        ("removed", keys, now)         keys deleted at, below or above the key
        ("down", reason, retry_in)     the stream dropped; retrying
        ("fatal", message)             give up (exit 2)
    """

    def __init__(self, endpoint: Endpoint, key: str, depth: int, limit: int, token: str | None,
                 events: queue.Queue) -> None:
        super().__init__(name="watch-feed", daemon=True)
        self.endpoint = endpoint
        self.key = key
        self.depth = depth
        self.limit = limit
        self.events = events
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._snapshots = 0

    def stop(self) -> None:
        """Ask the thread to end, waking it from a blocking read."""
        self.stopping.set()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self) -> None:
        import http.client

        delay = BACKOFF_FIRST_S
        while not self.stopping.is_set():
            seen = self._snapshots
            try:
                self._follow()
                reason = "the stream ended"
            except Fatal as e:
                self.events.put(("fatal", str(e)))
                return
            except (OSError, http.client.HTTPException, ValueError) as e:
                reason = _describe(e)
            finally:
                with self._lock:
                    conn, self._conn = self._conn, None
                if conn is not None:
                    conn.close()
            if self.stopping.is_set():
                return
            if self._snapshots > seen:  # it was working: start the backoff over
                delay = BACKOFF_FIRST_S
            self.events.put(("down", reason, delay))
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _follow(self) -> None:
        conn = self.endpoint.connect()
        with self._lock:
            self._conn = conn
        if self.stopping.is_set():
            return
        conn.request("GET", self.endpoint.path("events", self.key),
                     headers={"Accept": "text/event-stream", "Cache-Control": "no-store", **self.headers})
        resp = conn.getresponse()
        if resp.status != 200:
            _refuse(resp.status, resp.reason, resp.read())
        if not (resp.getheader("Content-Type") or "").startswith("text/event-stream"):
            raise Fatal(f"{self.endpoint.base} did not answer with an event stream: is it a progress service?")
        conn.sock.settimeout(READ_TIMEOUT_S)
        self.events.put(("connected",))
        event, data = "message", []
        while not self.stopping.is_set():
            line = resp.readline()
            if not line:
                return  # the server closed the stream
            line = line.rstrip(b"\r\n")
            if not line:  # end of one event
                if data:
                    self._dispatch(event, b"\n".join(data))
                event, data = "message", []
                continue
            if line.startswith(b":"):  # a heartbeat comment
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"event":
                event = value.decode()
            elif name == b"data":
                data.append(value)
            # "id" and "retry" need nothing here: every reconnection gets a snapshot

    def _dispatch(self, event: str, data: bytes) -> None:
        payload = orjson.loads(data)
        now = payload.get("_now") if isinstance(payload, dict) else None
        if event == "snapshot":
            self._snapshots += 1
            node = self._read() if payload.get("node") is not None else None
            self.events.put(("tree", node, now if node is None else node.get("_now", now)))
        elif event == "update":
            self.events.put(("update", payload.get("nodes") or [], now))
        elif event == "removed":
            self.events.put(("removed", payload.get("removed") or [], now))
        elif event == "error":
            raise Fatal(f"{payload.get('code', 'error')}: {payload.get('message', '')}")

    def _read(self) -> dict | None:
        """GET /status/<key> to the watched depth (None when it is not there)."""
        conn = self.endpoint.connect()
        try:
            conn.request("GET", self.endpoint.path("status", self.key, depth=self.depth, limit=self.limit),
                         headers={"Accept": "application/json", "Accept-Encoding": "gzip", **self.headers})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 404:
                return None
            if resp.status != 200:
                _refuse(resp.status, resp.reason, body)
            if (resp.getheader("Content-Encoding") or "").lower() == "gzip":
                import gzip

                body = gzip.decompress(body)
            return orjson.loads(body)
        finally:
            conn.close()


def _refuse(status: int, reason: str, body: bytes) -> None:
    """Raise for an HTTP answer that is not a success: Fatal when retrying
    cannot help, a ConnectionError (retried) otherwise."""
    line = _error_line(status, reason, body)
    if status in FATAL_STATUSES or 300 <= status < 400:
        raise Fatal(line)
    raise ConnectionError(line)


def _describe(e: BaseException) -> str:
    import http.client

    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "no answer (timed out)"
    if isinstance(e, http.client.RemoteDisconnected):
        return "the server closed the connection"
    text = str(e) or type(e).__name__
    return text if len(text) <= 120 else text[:119] + "…"


# -- the tree in memory -----------------------------------------------------------------


def _parent_key(key: str) -> str:
    return key.rsplit(".", 1)[0]


class WatchedTree:
    """The tree being shown, kept up to date from the feed's events."""

    def __init__(self, key: str, depth: int, limit: int) -> None:
        self.key = key
        self.depth = depth
        self.limit = limit
        self.root: dict | None = None
        self.index: dict[str, dict] = {}
        self.loaded = False  # a first read (or "not there") has arrived

    def level(self, key: str) -> int:
        """0 for the watched key, 1 for its children, …"""
        return key.count(".") - self.key.count(".")

    def concerns(self, key: str) -> bool:
        return key == self.key or key.startswith(self.key + ".")

    def replace(self, node: dict | None) -> None:
        self.loaded = True
        self.root = node
        self.index = {}
        stack = [node] if node else []
        while stack:
            n = stack.pop()
            self.index[n["key"]] = n
            stack.extend(n.get("tasks") or [])

    def update(self, nodes: list[dict]) -> bool:
        """Apply changed nodes (ancestors first); True when anything shown changed."""
        changed = False
        for new in nodes:
            key = new.get("key")
            if not isinstance(key, str) or not self.concerns(key) or self.level(key) >= self.depth:
                continue
            old = self.index.get(key)
            if old is not None:
                if (new.get("update_time") or 0) < (old.get("update_time") or 0):
                    continue  # older than the read that is shown already
                for field in [f for f in old if f not in STRUCTURAL]:
                    del old[field]  # a field set to null is absent from the new state
                old.update((f, v) for f, v in new.items() if f not in STRUCTURAL)
                changed = True
            elif key == self.key:  # it has just appeared
                self.root = dict(new)
                self.index = {key: self.root}
                changed = True
            else:
                changed |= self._insert(dict(new))
        return changed

    def _insert(self, node: dict) -> bool:
        parent = self.index.get(_parent_key(node["key"]))
        if parent is None:
            return False
        children = parent.setdefault("_children", [])
        total = parent.get("_children_total")
        whole = "_children_next" not in parent and (not isinstance(total, int) or total == len(children))
        if node["key"] not in children:
            if not whole:
                return False  # a wide parent's child not on the page shown: nothing to place it by
            children.append(node["key"])  # new children come last, in first-seen order
            parent["_children_total"] = len(children)
        tasks = parent.setdefault("tasks", [])
        if len(tasks) >= self.limit:
            return True  # counted in "… N more"
        tasks.append(node)
        self.index[node["key"]] = node
        return True

    def remove(self, keys: list[str]) -> bool:
        changed = False
        for gone in keys:
            if not isinstance(gone, str):
                continue
            if gone == self.key or self.key.startswith(gone + "."):
                self.root, self.index = None, {}
                changed = True
                continue
            if not self.concerns(gone):
                continue
            for k in [k for k in self.index if k == gone or k.startswith(gone + ".")]:
                del self.index[k]
            parent = self.index.get(_parent_key(gone))
            if parent is None:
                continue
            tasks = parent.get("tasks") or []
            kept = [t for t in tasks if t.get("key") != gone]
            children = parent.get("_children") or []
            if gone in children:
                children.remove(gone)
                if isinstance(parent.get("_children_total"), int):
                    parent["_children_total"] = max(0, parent["_children_total"] - 1)
            if len(kept) != len(tasks):
                parent["tasks"] = kept
            changed = True
        return changed


# -- the command ------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", nargs="?", metavar="KEY",
                        help="the node to watch; needed unless the URL ends in /status/KEY")
    parser.add_argument("--depth", type=_bounded_int(1, MAX_DEPTH), default=2,
                        help="levels shown: 1 the node alone, 2 (default) with its children, …")
    parser.add_argument("--url", default=None,
                        help="the service: http(s)://host:port, the same ending in /status (then give KEY), "
                             "or ending in /status/KEY, which names the key "
                             f"(default: $SCA_PROGRESS_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=os.environ.get("SCA_PROGRESS_TOKEN") or None,
                        help="bearer token, when the service asks for one (default: $SCA_PROGRESS_TOKEN)")
    parser.add_argument("--interval", type=_positive_float, default=0.2,
                        help="seconds between two redraws at most (default 0.2)")
    parser.add_argument("--limit", type=_bounded_int(1, MAX_LIMIT), default=100,
                        help="children shown per node; the rest are counted (default 100)")
    parser.set_defaults(func=run_watch)


def add_watch(subparsers) -> argparse.ArgumentParser:
    """Register `watch` on an argparse subparsers object."""
    parser = subparsers.add_parser("watch", help="follow a node and its subtree live in the terminal",
                                   description="Show KEY and its subtree, redrawn in place as it changes.")
    add_arguments(parser)
    return parser


def _interrupt(signum, frame) -> None:
    """Ctrl-C: unwind once; a second Ctrl-C during the clean-up is ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt()


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def _quiet_terminal():
    """Keep keys typed (^C among them) from echoing into the view, which would
    push it down a line; return what puts the terminal back as it was."""
    if termios is None:
        return lambda: None
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return lambda: None  # not a terminal, or not ours to set (a background job)
        saved = termios.tcgetattr(fd)
        quiet = termios.tcgetattr(fd)
        quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (OSError, ValueError, AttributeError, termios.error):
        return lambda: None

    def restore() -> None:
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        except (OSError, termios.error):
            pass

    return restore


def run_watch(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("SCA_PROGRESS_URL") or DEFAULT_URL
    try:
        endpoint, url_key = parse_url(url, "--url" if args.url else "SCA_PROGRESS_URL")
    except Fatal as e:
        print(f"sca-progress watch: {e}", file=sys.stderr)
        return 2
    key = args.key or url_key
    if not key:
        print("sca-progress watch: no KEY given (as an argument or in --url …/status/KEY)", file=sys.stderr)
        return 2
    from rich.console import Console

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum, handler in ((signal.SIGINT, _interrupt), (signal.SIGTERM, _terminate)):
        if previous[signum] is not signal.SIG_IGN:  # a signal ignored by whoever started us stays ignored
            signal.signal(signum, handler)
    try:
        return _watch(endpoint, key, args, err)
    except KeyboardInterrupt:
        return 0
    except Terminated:
        return 128 + signal.SIGTERM
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _watch(endpoint: Endpoint, key: str, args: argparse.Namespace, err) -> int:
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from .tree_view import render_tree

    events: queue.Queue = queue.Queue()
    tree = WatchedTree(key, args.depth, args.limit)
    feed = Feed(endpoint, key, args.depth, args.limit, args.token, events)
    console = Console(highlight=False)
    state = Text("connecting…", style="yellow")
    offset_ms = 0.0  # the server's clock minus ours
    fatal = None

    def view():
        now = int(time.time() * 1000 + offset_ms)
        head = Text.assemble(("watching ", "dim"), (key, "bold"), (" on ", "dim"), endpoint.base, "  ", state)
        if tree.root is not None:
            return Group(head, render_tree(tree.root, now_ms=now, max_children=args.limit))
        if tree.loaded:
            return Group(head, Text(f"waiting for {key}…", style="italic"))
        return head

    feed.start()
    restore_terminal = _quiet_terminal()
    try:
        with Live(view(), console=console, auto_refresh=False, transient=False,
                  vertical_overflow="ellipsis", redirect_stdout=False, redirect_stderr=False) as live:
            drawn = 0.0
            dirty = False
            while fatal is None:
                wait = 1.0 - (time.monotonic() - drawn)
                if dirty:
                    wait = min(wait, args.interval - (time.monotonic() - drawn))
                try:
                    item = events.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    item = None
                while item is not None:
                    kind = item[0]
                    if kind in ("tree", "update", "removed") and isinstance(item[2], (int, float)):
                        offset_ms = item[2] - time.time() * 1000
                    if kind == "connected":
                        state = Text("connected", style="green")
                    elif kind == "tree":
                        tree.replace(item[1])
                        state = Text("live", style="green")
                    elif kind == "update":
                        tree.update(item[1])
                    elif kind == "removed":
                        tree.remove(item[1])
                    elif kind == "down":
                        state = Text(f"reconnecting… ({item[1]}; retrying in {item[2]:g}s)", style="bold yellow")
                    elif kind == "fatal":
                        fatal = item[1]
                        if not tree.loaded:
                            live.transient = True  # nothing worth keeping: the error line alone stays
                        break
                    dirty = True
                    try:
                        item = events.get_nowait()
                    except queue.Empty:
                        item = None
                since = time.monotonic() - drawn
                if fatal is None and (since >= 1.0 or (dirty and since >= args.interval)):
                    live.update(view(), refresh=True)
                    drawn = time.monotonic()
                    dirty = False
    finally:
        restore_terminal()
        feed.stop()
    if fatal is not None:
        err.print(f"sca-progress watch: {fatal}", markup=False)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m sca_progress.client.watch KEY …`: the watch command on its own."""
    parser = argparse.ArgumentParser(prog="sca-progress watch",
                                     description="Show KEY and its subtree, redrawn in place as it changes.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
