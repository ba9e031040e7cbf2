"""make_app: the Tornado application with its routes; shared clients travel in its settings."""
from __future__ import annotations

import tornado.httpserver
import tornado.web
from tornado.log import access_log

from .handlers import (BatchHandler, HealthHandler, NodeHandler, NotFoundHandler, OpenApiHandler, TicketHandler,
                       redacted_uri)
from .service import Service
from .settings import Settings
from .socketio_feed import make_socketio, socketio_handler
from .sse import EventsHandler
from .ui import ui_routes

#: A node key in a URL; the engine validates it (see engine/keys.py).
KEY = r"([^/]+)"


#: Requests slower than this are logged even with --access-log errors.
SLOW_REQUEST_S = 1.0


def request_logger(mode: str):
    """Tornado's log_function for --access-log *mode*: "all" logs every request
    (INFO below 400), "errors" only answers of 400 and up and requests slower
    than SLOW_REQUEST_S, "off" none.  Python's logging costs ~15 % of the
    server's CPU at a thousand requests a second (bench/README.md, "REST"),
    which is why "errors" is the default.  Token and ticket values are
    redacted from URLs."""

    def log_request(handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        took = handler.request.request_time()
        if mode == "off" or (mode == "errors" and status < 400 and took < SLOW_REQUEST_S):
            return
        log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
        log("%d %s %s (%s) %.2fms", status, handler.request.method, redacted_uri(handler.request),
            handler.request.remote_ip, 1000.0 * took)

    return log_request


#: Most bytes of a request's start line and headers that Tornado reads: beyond
#: it, it closes the connection unanswered; below it, handlers answer 414 or
#: 431 with a JSON error (server/handlers.py, MAX_URI_BYTES, MAX_HEADERS_BYTES).
MAX_HEADER_BYTES = 256 * 1024


def http_server(app: tornado.web.Application) -> tornado.httpserver.HTTPServer:
    """The HTTP server of *app* (X-Forwarded-* and X-Real-Ip honoured: behind a
    proxy, the request's protocol and address are the client's)."""
    return tornado.httpserver.HTTPServer(app, xheaders=True, max_header_size=MAX_HEADER_BYTES)


async def make_app(settings: Settings) -> tornado.web.Application:
    service = Service(settings)
    await service.start()
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    service.sio = make_socketio(service, origins)
    routes = [
        (r"/health", HealthHandler),
        (r"/openapi.json", OpenApiHandler),
        (r"/status/?", BatchHandler),
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
        log_function=request_logger(settings.access_log),
    )
