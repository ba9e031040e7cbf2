"""make_app: the Tornado application with its routes; shared clients travel in its settings."""
from __future__ import annotations

import tornado.web

from .handlers import BatchHandler, HealthHandler, NodeHandler, NotFoundHandler
from .service import Service
from .settings import Settings

#: A node key in a URL; the engine validates it (see engine/keys.py).
KEY = r"([^/]+)"


async def make_app(settings: Settings) -> tornado.web.Application:
    service = Service(settings)
    await service.start()
    routes = [
        (r"/health", HealthHandler),
        (r"/status/?", BatchHandler),
        (rf"/status/{KEY}", NodeHandler),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        compress_response=True,
        service=service,
        engine=service.engine,
    )
