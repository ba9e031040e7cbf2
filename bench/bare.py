"""The baseline of bench.rest: a bare Tornado server (uvloop, like the service)
whose POST /status/<key> reads the body and answers a constant JSON body.

    python -m bench.bare --port 8099
"""
from __future__ import annotations

import argparse
import asyncio

import tornado.httpserver
import tornado.web
import uvloop

BODY = b'{"key":"x","progress":0.5,"_applied":true}'


class Constant(tornado.web.RequestHandler):
    def post(self, key: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(BODY)


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/status/([^/]+)", Constant)])
    server = tornado.httpserver.HTTPServer(app)
    server.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    uvloop.run(main(ap.parse_args().port))
