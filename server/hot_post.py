"""POST /status/<key>, the hot route, answered without tornado.web.RequestHandler.

One job's single update is the commonest request this service gets.  Through
RequestHandler it pays for machinery it does not use: a handler object and
its default headers per request, the regular-expression routing over every
route, the streamed-body plumbing, the output transforms.  That machinery is
~25 % of a single POST's server CPU (py-spy, bench/README.md, "REST").

``front(app)`` routes the plain case here: POST /status/<key> with a
Content-Length within the body limit, no query string, no percent-escapes,
no Origin (cross-origin writes and their CORS headers stay with
NodeHandler), no Expect and no oversized headers.  Every other request, and
every other route, goes to the Application as before.  The answer is
NodeHandler.post's: the same JSON, errors, headers, metrics and access log
(tests/test_rest.py and tests/test_auth.py run against both paths).
"""
from __future__ import annotations

import asyncio
import email.utils
import logging
import time

import orjson
import tornado
from tornado import httputil
from tornado.iostream import StreamClosedError

from sca_progress.engine import ProgressError

from .auth import bearer
from .framing import FramingRouter, close_after, is_decimal
from .handlers import MAX_HEADERS_BYTES, MAX_URI_BYTES, NodeHandler, new_request_id, parse_json, post_update

log = logging.getLogger("sca_progress.server")

_PREFIX = "/status/"
SERVER = f"TornadoServer/{tornado.version}"


class HotRouter(FramingRouter):
    """The hot route first, then the Application (see the module's docstring)."""

    def __init__(self, app) -> None:
        super().__init__(app)
        self.service = app.settings["service"]
        self.limit = self.service.engine.limits.max_body_bytes

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs):
        if request.method == "POST" and self._plain(request):
            return UpdateDelegate(self, request, request.path[len(_PREFIX):])
        return super().find_handler(request, **kwargs)

    def _plain(self, request) -> bool:
        uri = request.uri
        if not uri.startswith(_PREFIX) or "/" in uri[len(_PREFIX):] or "%" in uri or "?" in uri:
            return False
        if len(uri) == len(_PREFIX) or len(uri) > MAX_URI_BYTES:
            return False
        headers = request.headers
        length = headers.get("Content-Length")
        if not length or not is_decimal(length) or int(length) > self.limit:
            return False
        if "Origin" in headers or "Expect" in headers or "Transfer-Encoding" in headers:
            return False
        return sum(len(k) + len(v) for k, v in headers.get_all()) <= MAX_HEADERS_BYTES


class UpdateDelegate(httputil.HTTPMessageDelegate):
    """One plain POST /status/<key>: its body read, then applied and answered."""

    route = NodeHandler.route

    def __init__(self, router: HotRouter, request: httputil.HTTPServerRequest, key: str) -> None:
        self.router, self.request, self.key = router, request, key
        self.chunks: list[bytes] = []
        self.status = 200
        self.error_code = ""
        self.request_id = new_request_id(request.headers)

    def headers_received(self, start_line, headers) -> None:
        return None

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self) -> None:
        self.request.body = b"".join(self.chunks)
        self.chunks = []
        task = asyncio.ensure_future(self._answer())
        answering = self.router.service.answering  # shutdown waits for it (Service.settle)
        answering.add(task)
        task.add_done_callback(answering.discard)

    def on_connection_close(self) -> None:
        self.chunks = []

    async def _answer(self) -> None:
        extra = ()
        try:
            out = await self._apply()
        except ProgressError as e:
            self.status, self.error_code = e.status, e.code
            out = orjson.dumps({"error": e.as_dict()})
            if e.status == 401:
                extra = (("WWW-Authenticate", 'Bearer realm="sca-progress", error="invalid_token"'),)
            elif e.status == 429:
                extra = (("Retry-After", "1"),)
            if e.status < 500:
                log.info("POST %s: %s %s", self.request.uri, e.code, e.message)
            else:
                log.warning("POST %s: %s", self.request.uri, e.message)
        except Exception:
            log.error("POST %s: uncaught exception", self.request.uri, exc_info=True)
            self.status, self.error_code = 500, "http-500"
            out = b'{"error":{"code":"http-500","message":"Internal Server Error"}}'
        self._send(out, extra)

    async def _apply(self) -> bytes:
        service = self.router.service
        grant = service.auth.verify(bearer(self.request.headers.get("Authorization")))
        return orjson.dumps(await post_update(service, grant, self.key, parse_json(self.request.body)))

    def _send(self, body: bytes, extra) -> None:
        headers = httputil.HTTPHeaders()
        headers["Content-Type"] = "application/json"
        headers["Cache-Control"] = "no-store"
        headers["X-Request-Id"] = self.request_id
        headers["Date"] = _date()
        headers["Server"] = SERVER  # as RequestHandler's answers have it
        headers["Content-Length"] = str(len(body))
        for name, value in extra:
            headers[name] = value
        if self.router.service.draining:
            headers["Connection"] = "close"
            close_after(self.request)
        start = httputil.ResponseStartLine("HTTP/1.1", self.status, httputil.responses.get(self.status, "Unknown"))
        connection = self.request.connection
        try:
            connection.write_headers(start, headers, body)
            connection.finish()
        except StreamClosedError:
            pass  # the client left: nothing to answer
        self.request._finish_time = time.time()
        log_function = self.router.app.settings.get("log_function")
        if log_function is not None:
            log_function(self)

    def get_status(self) -> int:
        """For the access log and metrics (server/logs.py), as RequestHandler has it."""
        return self.status


_last_date = [0, ""]


def _date() -> str:
    """The Date header, formatted once a second."""
    now = int(time.time())
    if now != _last_date[0]:
        _last_date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _last_date[1]


def front(app):
    """What an HTTPServer of *app* serves: the hot route first when *app* is the
    service's Application; wrongly framed requests refused (server/framing.py)."""
    return HotRouter(app) if "service" in app.settings else FramingRouter(app)
