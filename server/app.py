"""make_app: the Tornado application with its routes; shared clients travel in its settings."""
from __future__ import annotations

import functools
import logging

import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web

from .framing import MAX_BODY_BYTES
from .handlers import (
    BatchHandler,
    HealthHandler,
    HistoryHandler,
    LiveHandler,
    MetricsHandler,
    NodeHandler,
    NotFoundHandler,
    OpenApiHandler,
    ReadyHandler,
    TicketHandler,
    redacted_uri,
)
from .hot_post import front
from .logs import request_logger
from .service import Service
from .settings import Settings
from .socketio_feed import make_socketio, socketio_handler
from .sse import EventsHandler
from .ui import ui_routes

log = logging.getLogger("sca_progress.http")

#: A node key in a URL; the engine validates it (see engine/keys.py).
KEY = r"([^/]+)"


#: Most bytes of a request's start line and headers that Tornado reads: beyond
#: it, it closes the connection unanswered; below it, handlers answer 414 or
#: 431 with a JSON error (server/handlers.py, MAX_URI_BYTES, MAX_HEADERS_BYTES).
MAX_HEADER_BYTES = 256 * 1024


# With xheaders, Tornado checks every request's client address with
# getaddrinfo (tornado.netutil.is_valid_ip, ~1.5 % of a single POST's time);
# the same few addresses come back on every request of a connection.
tornado.netutil.is_valid_ip = functools.lru_cache(maxsize=4096)(tornado.netutil.is_valid_ip)


def _nodelay_kept(value: bool) -> None:
    """IOStream.set_nodelay of our connections: Nagle stays off (see HTTPServer)."""


#: What Tornado writes, then closes the connection, when it cannot parse a
#: request (its start line, a header line, a chunk of a chunked body).
_TORNADO_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"
_BAD_REQUEST_BODY = orjson.dumps({"error": {"code": "bad-request", "message": "the request is not valid HTTP/1.1"}})
_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BAD_REQUEST_BODY), _BAD_REQUEST_BODY))


class HTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's server, with on each connection:

    - Nagle's algorithm off for good.  Every answer goes out in one write, so
      Nagle only ever delays it; Tornado turns it off and back on around each
      response, two setsockopt calls per request (~3 % of a single POST's
      time).  Here it is turned off once.
    - Tornado's answer to a request it cannot parse (a bare 400 with no
      headers, after which it closes) written as a JSON error that says
      `Connection: close`."""

    def handle_stream(self, stream, address) -> None:
        stream.set_nodelay(True)
        stream.set_nodelay = _nodelay_kept
        write = stream.write

        def write_json_400(data):
            if data == _TORNADO_BAD_REQUEST:
                data = _BAD_REQUEST
                log.info("%s: bad-request: not valid HTTP/1.1", address[0] if address else "?")
                app = getattr(self.request_callback, "app", None)  # the router's (framing.py)
                service = app.settings.get("service") if app is not None else None
                if service is not None:
                    service.metrics.observe_request("?", "other", 400, "bad-request", 0.0)
            return write(data)

        stream.write = write_json_400
        super().handle_stream(stream, address)


def http_server(app: tornado.web.Application) -> tornado.httpserver.HTTPServer:
    """The HTTP server of *app* (X-Forwarded-* and X-Real-Ip honoured: behind a
    proxy, the request's protocol and address are the client's)."""
    return HTTPServer(front(app), xheaders=True, max_header_size=MAX_HEADER_BYTES, max_body_size=MAX_BODY_BYTES)


async def make_app(settings: Settings, worker: tuple[int, int] = (0, 1)) -> tornado.web.Application:
    """The application of one server process; *worker* is (index, count) among --workers."""
    service = Service(settings, worker)
    await service.start()
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    service.sio = make_socketio(service, origins)
    routes = [
        (r"/health", HealthHandler),
        (r"/health/live", LiveHandler),
        (r"/health/ready", ReadyHandler),
        (r"/metrics", MetricsHandler),
        (r"/openapi.json", OpenApiHandler),
        (r"/status/?", BatchHandler),
        (rf"/status/{KEY}/history", HistoryHandler),
        (rf"/status/{KEY}", NodeHandler),
        (r"/auth/ticket", TicketHandler),
        (r"/events/?", EventsHandler),
        (rf"/events/{KEY}", EventsHandler),
        (r"/socket.io/", socketio_handler(service.sio, origins)),
        *ui_routes(KEY),  # the web UI: /, /ui/<key>, /static/...
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        compress_response=False,  # reads compress themselves (BaseHandler.finish_compressed)
        service=service,
        engine=service.engine,
        cors_origins=frozenset(origins),
        log_function=request_logger(settings.access_log, service.metrics, redacted_uri),
    )


def metrics_app(service: Service) -> tornado.web.Application:
    """GET /metrics of this process alone, for --metrics-port."""
    return tornado.web.Application([(r"/metrics", MetricsHandler)], default_handler_class=NotFoundHandler,
                                   service=service, engine=service.engine, cors_origins=frozenset(),
                                   log_function=lambda handler: None)


class _Starting(tornado.web.RequestHandler):
    """Every route while the service waits for Redis at start-up: the process
    lives (/health/live), it is not ready, and the API says why."""

    def prepare(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if self.request.path == "/health/live":
            self.finish(b'{"status":"live"}')
        elif self.request.path == "/health/ready":
            self.set_status(503)
            self.finish(b'{"status":"not-ready","problems":["starting: Redis does not answer yet"]}')
        else:
            self.set_status(503)
            self.set_header("Retry-After", "1")
            self.finish(b'{"error":{"code":"starting","message":"the service is starting: '
                        b'Redis does not answer yet"}}')


def starting_app() -> tornado.web.Application:
    """What answers while make_app waits for Redis (server/run.py swaps it for the real one)."""
    return tornado.web.Application([], default_handler_class=_Starting, log_function=lambda handler: None)
