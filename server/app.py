"""make_app: the Tornado application with its routes; shared clients travel in its settings."""
from __future__ import annotations

import socketio
import tornado.web
from tornado.log import access_log

from .handlers import (BatchHandler, HealthHandler, NodeHandler, NotFoundHandler, OpenApiHandler, TicketHandler,
                       redacted_uri)
from .service import Service
from .settings import Settings
from .socketio_feed import make_socketio
from .sse import EventsHandler
from .ui import ui_routes

#: A node key in a URL; the engine validates it (see engine/keys.py).
KEY = r"([^/]+)"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log, with token and ticket values redacted from URLs."""
    status = handler.get_status()
    log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
    log("%d %s %s (%s) %.2fms", status, handler.request.method, redacted_uri(handler.request), handler.request.remote_ip,
        1000.0 * handler.request.request_time())


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
        (r"/socket.io/", socketio.get_tornado_handler(service.sio)),
        *ui_routes(KEY),  # the web UI: /, /ui/<key>, /static/...
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        compress_response=True,
        service=service,
        engine=service.engine,
        cors_origins=frozenset(origins),
        log_function=log_request,
    )
