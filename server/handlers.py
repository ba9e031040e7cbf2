"""REST handlers: parse, call the engine, answer JSON (orjson).

    GET    /health          Redis reachable? 200, else 503 (public)
    GET    /openapi.json    this API as an OpenAPI 3.1 document (public)
    POST   /auth/ticket     a short-lived ticket for GET /events (with a bearer token)
    GET    /status          the top namespace (lists namespaces and bare trees)
    POST   /status          batch: a JSON array of updates, each with "key"
    GET    /status/<key>    a node (or namespace) with ?depth=&limit=&cursor=&order=&status=
    POST   /status/<key>    one update, applied at once; answers the node's new state
    DELETE /status/<key>    removes the subtree; 204

Errors are rendered once, by BaseHandler.write_error, as
``{"error": {"code": ..., "message": ...}}`` with a 4xx, or 503 when Redis is
unreachable.  With auth on, BaseHandler.prepare verifies the bearer token of
every non-public route (401) and each handler checks its scopes (403).
"""
from __future__ import annotations

import gzip
import itertools
import logging
import os
import re
import secrets

import orjson
import tornado.web
from sca_progress.engine import APPLIED, STALE, ProgressError, TooLarge, now_ms
from sca_progress.engine.errors import Forbidden, json_error
from sca_progress.engine.errors import invalid as bad
from sca_progress.engine import history as histories
from sca_progress.engine.keys import TOP, is_namespace
from sca_progress.engine.read import check_status_filter
from sca_progress.engine.records import decode

from .auth import OPEN, TICKET_TTL_MS, bearer
from .framing import close_after, is_decimal
from .metrics import CONTENT_TYPE
from .openapi import openapi

log = logging.getLogger("sca_progress.http")


#: Longest URL answered (a key is at most 255 bytes; query parameters are few).
MAX_URI_BYTES = 8192
#: Most bytes of request headers answered (Tornado reads up to MAX_HEADER_BYTES,
#: server/app.py, so that anything between gets a 414 or 431, not a cut connection).
MAX_HEADERS_BYTES = 32768

#: How much of a body over the limit is read (and dropped) so that its 413
#: reaches a client that sends it whole before reading, in multiples of the
#: limit: 32 x 4 MiB covers every body the server takes (100 MiB, framing.py).
DISCARD_FACTOR = 32

#: Answers shorter than this are sent as they are (gzip would not pay).
GZIP_MIN_BYTES = 1024

#: Query parameters that carry credentials: never written to any log.
_SECRET_PARAMS = re.compile(r"((?:^|[?&])(?:token|ticket)=)[^&]*")


def redacted_uri(request) -> str:
    """The request's URI with token and ticket values replaced, fit for logs."""
    uri = request.uri
    if "token=" not in uri and "ticket=" not in uri:
        return uri
    return _SECRET_PARAMS.sub(r"\1[redacted]", uri)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: New request ids: a random prefix per process and a counter (os.urandom per
#: request cost a system call each); a forked worker draws its own prefix.
_ids = [secrets.token_hex(5), itertools.count(1)]


def _new_ids() -> None:
    _ids[:] = [secrets.token_hex(5), itertools.count(1)]


os.register_at_fork(after_in_child=_new_ids)


def new_request_id(headers) -> str:
    """The client's X-Request-Id when it sends a sane one, else a new one."""
    rid = headers.get("X-Request-Id", "")
    if not rid or not _REQUEST_ID.fullmatch(rid):
        rid = f"{_ids[0]}{next(_ids[1]):06x}"
    return rid


def parse_json(raw: bytes):
    """A request body's JSON value; 400 bad-body or bad-json when it has none."""
    if not raw.strip():
        raise bad("bad-body", "the body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise json_error(e) from None


async def post_update(service, grant, key: str, body) -> dict:
    """POST /status/<key> (NodeHandler and the hot route, server/hot_post.py):
    apply *body* to *key* at once; the node's new state, _applied and _now."""
    if not isinstance(body, dict):
        raise bad("bad-body", "POST /status/<key> takes a JSON object; "
                               "POST /status takes an array of updates")
    grant.check_write(key)
    await service.check_rate(grant, 1)
    result = await service.apply([(key, body)])
    outcome = result.results[0]
    if isinstance(outcome, ProgressError):
        raise outcome
    node = result.node(key, fragments=True) if outcome is APPLIED else await service.engine.read(key)
    node["_applied"] = outcome is APPLIED
    if outcome is STALE:
        node["_reason"] = "stale: ts is older than the node's last update"
    node["_now"] = result.now
    return node


class BaseHandler(tornado.web.RequestHandler):
    """JSON in, JSON out; ProgressErrors become their HTTP status."""

    #: Routes anyone may call, even with auth on.
    public = False
    #: The route's name in metrics (server/metrics.py).
    route = "other"
    #: The error code of the answer, when it is an error (metrics).
    error_code = ""

    @property
    def engine(self):
        return self.application.settings["engine"]

    @property
    def service(self):
        return self.application.settings["service"]

    #: Whether shutdown waits for this route's answers (not for streams: they end first).
    settles = True

    def initialize(self) -> None:
        if self.settles:
            self.service.answering.add(self)

    def on_finish(self) -> None:
        self.service.answering.discard(self)

    def on_connection_close(self) -> None:
        self.service.answering.discard(self)
        super().on_connection_close()  # a body still streaming in ends here (else its handler waits forever)

    def finish(self, chunk=None):
        if self.service.draining and not self._headers_written:
            self.set_header("Connection", "close")  # shutting down: checked when answering, not when routed
            close_after(self.request)
        return super().finish(chunk)

    def prepare(self) -> None:
        self.grant = OPEN
        if len(self.request.uri) > MAX_URI_BYTES:
            raise tornado.web.HTTPError(414, "the URL is longer than %d bytes (a key is at most 255)", MAX_URI_BYTES)
        if sum(len(k) + len(v) for k, v in self.request.headers.get_all()) > MAX_HEADERS_BYTES:
            raise tornado.web.HTTPError(431, "the request's headers are larger than %d bytes", MAX_HEADERS_BYTES)
        if self.request.method in ("POST", "DELETE", "PUT", "PATCH"):
            self._same_origin_only()
        if not self.public and self.request.method != "OPTIONS":
            self.grant = self.service.auth.verify(bearer(self.request.headers.get("Authorization")))

    def _same_origin_only(self) -> None:
        """Browsers send Origin with cross-site writes (even 'simple' ones that skip
        the CORS preflight): refuse those unless the origin is allowed, so no
        web page can write to a service it happens to reach.  Programs (curl,
        job scripts) send no Origin."""
        origin = self.request.headers.get("Origin")
        if (origin and origin not in self.application.settings["cors_origins"]
                and origin != f"{self.request.protocol}://{self.request.host}"):
            raise Forbidden(f"cross-origin request from {origin} refused (see --cors-origins)")

    @property
    def request_id(self) -> str:
        """The request's id (new_request_id), answered in X-Request-Id and logged with the request."""
        rid = self.__dict__.get("_request_id")
        if rid is None:
            rid = self._request_id = new_request_id(self.request.headers)
        return rid

    def set_default_headers(self) -> None:
        self.set_header("X-Request-Id", self.request_id)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        origin = self.request.headers.get("Origin")
        if origin and origin in self.application.settings["cors_origins"]:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
            # what a page's script may read of an answer, beyond the basic headers
            self.set_header("Access-Control-Expose-Headers", "X-Request-Id, Retry-After, WWW-Authenticate")
            self.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
            self.set_header("Access-Control-Max-Age", "600")

    def options(self, *_args) -> None:
        """CORS preflight (allowed origins get their headers from set_default_headers)."""
        self.set_status(204)
        self.finish()

    def finish_compressed(self, body: bytes) -> None:
        """Finish with *body*, gzipped when the client accepts it and it is worth it.
        (Done here, for reads, rather than by Tornado's compress_response for
        every answer: its transform costs each small POST answer ~10 % of the
        server's time, bench/README.md, "REST".)"""
        self.add_header("Vary", "Accept-Encoding")  # beside set_default_headers' Vary: Origin
        if len(body) >= GZIP_MIN_BYTES and "gzip" in self.request.headers.get("Accept-Encoding", ""):
            self.set_header("Content-Encoding", "gzip")
            body = gzip.compress(body, compresslevel=6)
        self.finish(body)

    def send_json(self, obj, status: int = 200) -> None:
        self.set_status(status)
        self.finish(orjson.dumps(obj))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ProgressError):
            self.set_status(exc.status)
            body = exc.as_dict()
            if exc.status == 401:
                self.set_header("WWW-Authenticate", 'Bearer realm="sca-progress", error="invalid_token"')
            if exc.status == 429:
                self.set_header("Retry-After", "1")
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            body = {"code": f"http-{status_code}", "message": exc.log_message % exc.args}
        elif status_code == 405:
            body = {"code": "http-405", "message": f"{self.request.method} is not allowed here; "
                                                   f"allowed: {', '.join(self.allowed_methods())}"}
        else:
            body = {"code": f"http-{status_code}", "message": self._reason}
        self.error_code = body["code"]
        self.set_header("Content-Type", "application/json")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if self.body_left_unread():
            self.set_header("Connection", "close")  # Tornado ends the connection after this answer
        self.finish(orjson.dumps({"error": body}))

    def body_left_unread(self) -> bool:
        """Whether an answer now leaves the request's body unread (so Tornado
        closes the connection after it): never here, where Tornado reads the
        body before the handler runs."""
        return False

    def allowed_methods(self) -> list[str]:
        """The methods this handler answers (for 405's Allow header)."""
        base = tornado.web.RequestHandler
        return [m for m in self.SUPPORTED_METHODS
                if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)]

    def log_exception(self, typ, value, tb) -> None:
        uri = redacted_uri(self.request)
        if isinstance(value, ProgressError) and value.status < 500:
            log.info("%s %s: %s %s", self.request.method, uri, value.code, value.message)
        elif isinstance(value, ProgressError):
            log.warning("%s %s: %s", self.request.method, uri, value.message)
        elif isinstance(value, tornado.web.HTTPError):
            message = value.log_message % value.args if value.log_message else value.reason or ""
            log.info("%s %s: %d %s", self.request.method, uri, value.status_code, message)
        else:
            log.error("%s %s: uncaught exception", self.request.method, uri, exc_info=(typ, value, tb))


@tornado.web.stream_request_body
class BodyHandler(BaseHandler):
    """Reads a JSON body, refusing one larger than the limit (413) before it is all in.

    Keep-alive: a request refused before its body is read (401, 403) keeps its
    connection usable only if the body is still read off the connection; so
    such a refusal waits until the body is in (and is dropped unread) and is
    raised by the handler's method.  A body over the limit is read and
    dropped too, and then refused (413), so the answer reaches a client that
    sends its whole body before it reads (closing a connection with unread
    data makes TCP reset it, answer and all): up to DISCARD_FACTOR times the
    limit, past which the connection is simply closed.  A Content-Length
    over that, or over the limit with `Expect: 100-continue` (the client
    waits before sending), is refused at once: that 413 says
    `Connection: close`, and the connection closes after it.  So does the
    405 of a method Tornado does not know (it answers before the body).
    """

    def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = self.engine.limits.max_body_bytes
        self._refusal: ProgressError | tornado.web.HTTPError | None = None
        self._too_large = False
        length = self.request.headers.get("Content-Length")
        if length and is_decimal(length) and int(length) > self._limit and (
                int(length) > DISCARD_FACTOR * self._limit or "Expect" in self.request.headers):
            self._refuse_too_large()
            return
        try:
            super().prepare()
        except (ProgressError, tornado.web.HTTPError) as e:
            # Raised once the body is in: by the method Tornado then calls.
            # (Answered here, before the body is read, the connection would
            # close without saying so: 414 and 431 are deferred the same way.)
            self._refusal = e
            setattr(self, self.request.method.lower(), self._refused)

    async def _refused(self, *_args) -> None:
        raise self._refusal

    def _refuse_too_large(self) -> None:
        self._too_large = True
        self.send_error(413, exc_info=(TooLarge, TooLarge(f"the body is larger than {self._limit} bytes"), None))

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            if self._refusal is None:
                self._chunks.append(chunk)
            return
        if self._refusal is None or not isinstance(self._refusal, TooLarge):
            self._chunks = []
            self._refusal = TooLarge(f"the body is larger than {self._limit} bytes")
            setattr(self, self.request.method.lower(), self._refused)
        if self._size > DISCARD_FACTOR * self._limit:
            self.request.connection.stream.close()

    def body_left_unread(self) -> bool:
        """Refused at once for its length, or before prepare ran (a method
        Tornado does not know): the body stays unread."""
        return "_chunks" not in self.__dict__ or self._too_large

    def json_body(self):
        return parse_json(b"".join(self._chunks))

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._chunks = []


class HealthHandler(BaseHandler):
    public = True
    route = "/health"

    async def get(self) -> None:
        health = await self.service.health()
        # 503 only when Redis is gone: REST still works while AMQP reconnects ("degraded").
        self.send_json(health, 503 if health["status"] == "unavailable" else 200)

    head = get  # probes that ask with HEAD get GET's status and headers (Tornado sends no body)


class LiveHandler(BaseHandler):
    """GET /health/live: the process runs and its event loop answers (a
    liveness probe: restart the process when this fails)."""

    public = True
    route = "/health/live"

    def get(self) -> None:
        self.send_json({"status": "live", "_now": now_ms()})

    head = get  # probes that ask with HEAD get GET's status and headers (Tornado sends no body)


class ReadyHandler(BaseHandler):
    """GET /health/ready: Redis answers and, when AMQP is configured, the
    intake is consumed (a readiness probe: send traffic here only while 200)."""

    public = True
    route = "/health/ready"

    async def get(self) -> None:
        service = self.service
        problems = []
        if service.closing:
            problems.append("stopping")
        if not await self.engine.ping():
            problems.append("redis unreachable")
        if service.link is not None and not service.link.connected:
            problems.append(f"amqp not consuming ({service.link.state})")
        body = {"status": "not-ready" if problems else "ready", "_now": now_ms()}
        if problems:
            body["problems"] = problems
        self.send_json(body, 503 if problems else 200)

    head = get  # probes that ask with HEAD get GET's status and headers (Tornado sends no body)


class MetricsHandler(BaseHandler):
    """GET /metrics: Prometheus text format (server/metrics.py).  Public, like
    the health routes: its labels name routes, sources and error codes, never
    a key."""

    public = True
    route = "/metrics"

    async def get(self) -> None:
        body = await self.service.metrics.exposition()
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)


class HistoryHandler(BodyHandler):
    """/status/<key>/history: a node's progress history as points, and its trend."""

    route = "/status/{key}/history"

    async def head(self, key: str) -> None:
        """GET's headers (Tornado sends no body for HEAD)."""
        await self.get(key)

    async def get(self, key: str) -> None:
        self.grant.check_read(key)
        if is_namespace(key):
            raise bad("bad-key", "a namespace keeps no progress history; ask for one of its trees' nodes")
        node = await self.engine.read(key, history=True)
        h = node.get("_history")
        step, samples = (h["step_ms"], h["samples"]) if h else (self.engine.history_step_ms, [])
        now = now_ms()
        trend = histories.summary(node, step, samples, now)
        self.send_json({"key": key, "start_time": node["start_time"], "update_time": node.get("update_time"),
                        "progress": node.get("progress"), "status": node.get("status"), "eta": node.get("eta"),
                        "step_ms": step, "points": histories.points(node, step, samples),
                        "trend_rate": trend["trend_rate"], "trend_eta": trend["trend_eta"], "_now": now})


class NodeHandler(BodyHandler):
    """/status/<key>: one node."""

    route = "/status/{key}"

    async def head(self, key: str = TOP) -> None:
        """GET's headers (Tornado sends no body for HEAD)."""
        await self.get(key)

    async def get(self, key: str = TOP) -> None:
        self.grant.check_read(key)
        stalled = self._exact_arg("stalled") or ""  # as sent: Tornado's getter makes '%00' ''
        if stalled not in ("", "0", "1"):
            raise bad("bad-stalled", "stalled must be 1 (list the stalled nodes) or 0")
        history = self._exact_arg("history") or ""
        if history not in ("", "0", "1"):
            raise bad("bad-history", "history must be 1 (each tree node with its _history) or 0")
        if stalled == "1":
            await self._stalled(key)
            return
        body = await self.engine.read_json(
            key,
            depth=self._int_arg("depth", 1),
            limit=self._int_arg("limit", None),
            cursor=self.get_query_argument("cursor", None),
            order=self.get_query_argument("order", "first"),
            more={"_now": now_ms()},
            status=self._exact_arg("status"),
            history=history == "1",
        )
        self.finish_compressed(body)

    async def _stalled(self, key: str) -> None:
        """?stalled=1: the stalled nodes of the subtree (to --depth, by default
        all of it that one read may load), each without its tasks.  Wide
        nodes are paged as in any read: the node's next page of children is
        ``_children_next`` (give it as ``cursor``), and ``_more`` names the
        nodes below whose children were cut at a page, with their cursors.
        With ``status``, only the stalled nodes in that status (``none``:
        without one)."""
        lim, want = self.engine.limits, self._exact_arg("status")
        if want is not None:
            check_status_filter(want, lim)
        depth, limit = self._int_arg("depth", lim.max_read_depth), self._int_arg("limit", None)
        while True:  # a subtree too big for one read: smaller pages per node, cut as _more says
            try:
                node = await self.engine.read(key, depth=depth, limit=limit,
                                              cursor=self.get_query_argument("cursor", None),
                                              order=self.get_query_argument("order", "first"))
                break
            except ProgressError as e:
                if e.code != "too-many-nodes" or limit == 1:
                    raise
                limit = max(1, (limit or lim.default_children_limit) // 4)
        found, more, stack = [], [], [node]
        while stack:
            n = stack.pop()
            stack.extend(reversed(n.get("tasks", ())))
            if n.get("_stalled") and (want is None or n.get("status", "none") == want):
                found.append({k: v for k, v in n.items() if k not in ("tasks", "_children_next")})
            if n is not node and "_children_next" in n:
                more.append({"key": n["key"], "_children_next": n["_children_next"]})
        body = {"key": key, "stalled": found, "_now": now_ms()}
        if "_children_next" in node:
            body["_children_next"] = node["_children_next"]
        if more:
            body["_more"] = more
        self.send_json(body)

    async def post(self, key: str) -> None:
        self.send_json(await post_update(self.service, self.grant, key, self.json_body()))

    async def delete(self, key: str = TOP) -> None:
        self.grant.check_admin()
        await self.service.delete(key)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    def _exact_arg(self, name: str) -> str | None:
        """The query argument as sent: Tornado's own getters turn control
        characters into spaces and strip the ends, which would make a
        status such as "\\x05" (one a POST may set) unfindable."""
        values = self.request.query_arguments.get(name)
        if not values:
            return None
        try:
            return values[-1].decode("utf-8")
        except UnicodeDecodeError:
            raise bad(f"bad-{name}", f"{name} must be UTF-8") from None

    def _int_arg(self, name: str, default):
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        digits = raw[1:] if raw[:1] == "-" else raw
        if not is_decimal(digits):  # int() also takes '1_0', ' 1' and other scripts' digits
            raise bad(f"bad-{name}", f"{name} must be an integer, not {raw!r}")
        return int(raw)


class BatchHandler(NodeHandler):
    """/status: the top namespace (GET) and batch ingestion (POST)."""

    route = "/status"
    delete = tornado.web.RequestHandler.delete  # the top namespace cannot be deleted: 405

    async def post(self) -> None:
        body = self.json_body()
        if not isinstance(body, list):
            raise bad("bad-body", "POST /status takes a JSON array of updates, each with a \"key\"")
        limit = self.engine.limits.max_batch_updates
        if len(body) > limit:
            raise TooLarge(f"a batch may hold at most {limit} updates")
        updates, refused = [], {}
        for i, item in enumerate(body):
            key = item.get("key") if isinstance(item, dict) else None
            if not isinstance(key, str):
                refused[i] = bad("bad-item", "each update must be a JSON object with a string \"key\"")
                self.service.metrics.refuse("rest", "bad-item")
                continue
            if not self.grant.can_write(key):
                refused[i] = Forbidden(f"the token may not write {key!r}")
                self.service.metrics.refuse("rest", refused[i].code)
                continue
            updates.append((key, {k: v for k, v in item.items() if k != "key"}))
        await self.service.check_rate(self.grant, len(updates))
        result = await self.service.apply(updates)
        states = dict(result.changed)
        stale = [key for (key, _), outcome in zip(updates, result.results) if outcome is STALE]
        current = {n["key"]: n for n in await self.engine.read_many(stale)} if stale else {}
        outcomes = iter(result.results)
        items = []
        for i, item in enumerate(body):
            if i in refused:
                key = item.get("key") if isinstance(item, dict) else None
                items.append({**({"key": key} if isinstance(key, str) else {}), "ok": False,
                              "error": refused[i].as_dict()})
                continue
            key = item["key"]
            outcome = next(outcomes)
            if isinstance(outcome, ProgressError):
                items.append({"key": key, "ok": False, "error": outcome.as_dict()})
            elif outcome is APPLIED:
                items.append({"key": key, "ok": True, "applied": True,
                              "node": decode(key, states[key], fragments=True)})
            else:
                items.append({"key": key, "ok": True, "applied": False, "reason": "stale", "node": current.get(key)})
        self.send_json({"_now": result.now, "results": items})


class TicketHandler(BaseHandler):
    """POST /auth/ticket: trade the bearer token for a short-lived, single-use
    ticket for GET /events/<key>?ticket=... (EventSource cannot send headers,
    and a token in a URL ends up in logs)."""

    route = "/auth/ticket"

    async def post(self) -> None:
        ticket = await self.service.issue_ticket(self.grant)
        self.send_json({"ticket": ticket, "expires_in": TICKET_TTL_MS // 1000})


class OpenApiHandler(BaseHandler):
    public = True
    route = "/openapi.json"

    def get(self) -> None:
        self.send_json(openapi())


class NotFoundHandler(BaseHandler):
    public = True

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404, "no such route: %s", self.request.path)

