"""The progress web UI: one page for `/` and `/ui/<key>`, its assets under `/static/`.

    GET /              the top-level listing: namespaces and bare trees
    GET /ui/<key>      a namespace (`_portal`): its trees, most recently updated first;
                       any other key: that node's tree, live
    GET /static/<f>    the page's CSS and ES modules (server/static/, shipped in the package)

The page is the same file for every key; its scripts read the key from the URL
and do the rest in the browser: REST for listings and pages of children, the
SSE feed `GET /events/<key>` (EventSource) to stay live.  Nothing is built and
nothing is fetched from elsewhere.  Every UI response carries a
Content-Security-Policy that allows only this origin's own files: no inline
scripts or styles, no outside hosts.
"""
from __future__ import annotations

from pathlib import Path

import orjson
import tornado.web

from sca_progress.engine import InvalidKey, check_key
from sca_progress.engine.keys import TOP

#: The page, its scripts and stylesheet (package data: see setup.cfg).
STATIC_DIR = Path(__file__).with_name("static")
PAGE = "index.html"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class AssetHandler(tornado.web.StaticFileHandler):
    """A file of server/static/, with the UI's security headers.

    Browsers revalidate (ETag / Last-Modified) on every load, so a new release
    is picked up without versioned URLs.
    """

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")

    def write_error(self, status_code: int, **kwargs) -> None:
        """Errors as every route gives them (JSON), 405 with its Allow header."""
        if status_code == 405:
            self.set_header("Allow", "GET, HEAD")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(orjson.dumps({"error": {"code": f"http-{status_code}", "message": self._reason}}))


class PageHandler(AssetHandler):
    """The page itself, for every listing and tree; an invalid key is a 400."""

    async def get(self, key: str = TOP, include_body: bool = True) -> None:
        if key != TOP:
            try:
                check_key(key)
            except InvalidKey as e:
                self.set_status(400)
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                self.finish(f"{e}\n")
                return
        await super().get(PAGE, include_body)

    async def head(self, key: str = TOP) -> None:
        await self.get(key, include_body=False)


def ui_routes(key_pattern: str) -> list:
    """The UI's routes; *key_pattern* captures a node key from the URL."""
    files = {"path": str(STATIC_DIR)}
    return [
        (r"/", PageHandler, files),
        (r"/ui/?", PageHandler, files),
        (rf"/ui/{key_pattern}", PageHandler, files),
        (r"/static/(.+)", AssetHandler, files),
    ]
