"""Requests whose body length cannot be known safely, refused before any of it is read.

Tornado refuses a request with both Content-Length and Transfer-Encoding, a
coding other than ``chunked``, or a Content-Length that is not one decimal
number (or is over the server's body limit) once its headers are in: it
writes ``HTTP/1.1 400 Bad Request`` with no headers and no body, and closes
the connection, without saying so.  Such a request is refused here instead,
on the same grounds (RFC 9112, section 6.3: the server must then close the
connection): a JSON error, ``Connection: close``, then the close.  Nothing is
routed, authenticated or applied.
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import socket
import time
import urllib.parse

import orjson
import tornado.routing
from tornado import httputil
from tornado.iostream import StreamClosedError

log = logging.getLogger("sca_progress.server")

#: Most bytes of a body the HTTP server takes (its max_body_size, server/app.py);
#: a route refuses less with a 413 of its own (BodyHandler).
MAX_BODY_BYTES = 100 * 1024 * 1024

#: After the answer, what the client still sends is read and dropped, up to
#: this many bytes and seconds, before the close: closing a socket with
#: unread data makes TCP reset it, and a reset can discard the answer before
#: the client has read it.
DISCARD_BYTES, DISCARD_SECONDS = 128 << 20, 10.0

_closing: set[asyncio.Task] = set()  # held: the loop keeps only weak references

_LENGTHS = re.compile(r",[ \t]*")


def is_decimal(text: str) -> bool:
    """Whether *text* is ASCII digits only (str.isdigit also takes '²' and '٣', which int() refuses)."""
    return text.isascii() and text.isdigit()


def close_after(request: httputil.HTTPServerRequest) -> None:
    """Have Tornado close *request*'s connection once it is answered, saying so
    (`Connection: close` in the answer's headers, which Tornado then writes
    itself).  Tornado keeps this in a private flag of its HTTP/1.1
    connection; without it (another connection class), nothing changes."""
    if hasattr(request.connection, "_disconnect_on_finish"):
        request.connection._disconnect_on_finish = True


def bad_framing(headers: httputil.HTTPHeaders) -> tuple[int, str, str] | None:
    """(status, code, message) when the body's length cannot be known safely, else None."""
    length = headers.get("Content-Length")
    coding = headers.get("Transfer-Encoding")
    if coding is not None:
        if length is not None:
            return 400, "bad-framing", "a request may not have both Content-Length and Transfer-Encoding"
        if coding.lower() != "chunked":
            return 400, "bad-framing", f"Transfer-Encoding {coding[:64]!r} is not supported (only chunked)"
        return None
    if length is not None and not is_decimal(length):
        pieces = _LENGTHS.split(length)  # a proxy may repeat the same length
        if len(set(pieces)) > 1 or not is_decimal(pieces[0]):
            return 400, "bad-framing", f"Content-Length {length[:64]!r} is not one decimal number"
        length = pieces[0]
    if length is not None and int(length) > MAX_BODY_BYTES:
        return 413, "too-large", f"the body is larger than {MAX_BODY_BYTES} bytes"
    return None


class FramingRouter(tornado.routing.Router):
    """*app*'s routes, behind the refusal of wrongly framed requests."""

    def __init__(self, app) -> None:
        self.app = app

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs):
        service = self.app.settings.get("service")
        if service is not None and service.draining:  # shutting down: every route's answer says it
            close_after(request)
        refused = bad_framing(request.headers)
        if refused:
            return Refusal(request, *refused, log_function=self.app.settings.get("log_function"))
        if not request.uri.startswith("/"):
            origin_form(request)
        return self.app.find_handler(request, **kwargs)


def origin_form(request: httputil.HTTPServerRequest) -> None:
    """A request target in absolute form ('http://host/status/x', as proxies
    send it; servers must accept it, RFC 9112 section 3.2.2) routed as its
    path, its authority taking the place of Host."""
    parts = urllib.parse.urlsplit(request.uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return  # not absolute: routed as it is (to a 404)
    request.path = parts.path or "/"
    request.uri = request.path + ("?" + parts.query if parts.query else "")
    request.host = parts.netloc
    request.host_name = httputil.split_host_and_port(parts.netloc.lower())[0]


class Refusal(httputil.HTTPMessageDelegate):
    """Answers one wrongly framed request and closes its connection unread.
    It is logged and counted as any answer (the access log's *log_function*)."""

    route = "other"  # for the access log and metrics, as handlers have it

    def __init__(self, request: httputil.HTTPServerRequest, status: int, code: str, message: str,
                 log_function=None) -> None:
        from .handlers import new_request_id  # (handlers imports this module)

        self.request, self.status, self.error_code = request, status, code
        self.request_id = new_request_id(request.headers)
        self.log_function = log_function
        self.body = orjson.dumps({"error": {"code": code, "message": message}})
        log.info("%s %s: %s %s", request.method, request.uri, code, message)

    def get_status(self) -> int:
        return self.status

    def headers_received(self, start_line, headers) -> None:
        # Taken off Tornado's hands before it reads (or refuses) the body.
        stream = self.request.connection.detach()
        reason = httputil.responses.get(self.status, "Bad Request")
        head = (f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: application/json\r\n"
                f"Cache-Control: no-store\r\nX-Request-Id: {self.request_id}\r\n"
                f"Date: {email.utils.formatdate(usegmt=True)}\r\nConnection: close\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n")
        self.request._finish_time = time.time()
        if self.log_function is not None:
            self.log_function(self)
        task = asyncio.ensure_future(_answer_and_close(stream, head.encode("latin-1") + self.body))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    def data_received(self, chunk: bytes) -> None:  # never: the connection is detached
        pass

    def finish(self) -> None:
        pass


async def _answer_and_close(stream, answer: bytes) -> None:
    """Write *answer*, say no more (half-close), drop what the client still sends, close."""
    try:
        await stream.write(answer)
        stream.socket.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(_discard(stream), DISCARD_SECONDS)
    except (StreamClosedError, OSError, asyncio.TimeoutError):
        pass
    finally:
        stream.close()


async def _discard(stream) -> None:
    dropped = 0
    while dropped < DISCARD_BYTES:
        dropped += len(await stream.read_bytes(65536, partial=True))
