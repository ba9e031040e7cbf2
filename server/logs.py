"""Logging: the format of every line (text or JSON) and the access log of requests."""
from __future__ import annotations

import logging
import sys
import time

import orjson
import tornado.web
from tornado.log import access_log

#: Requests slower than this are logged even with --access-log errors ...
SLOW_REQUEST_S = 1.0
#: ... but streams, which last as long as their client stays.
STREAMS = frozenset({"/events/{key}", "/socket.io"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, msg, and
    for access-log lines request_id, method, route, path, status,
    duration_ms, remote_ip; exc holds a traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        http = getattr(record, "http", None)
        if http:
            line.update(http)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, fmt: str) -> None:
    """Log to stderr at *level*, as text lines or (fmt "json") JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def request_logger(mode: str, metrics=None, redact=lambda request: request.uri):
    """Tornado's log_function: counts every answer in *metrics*, and logs them
    by --access-log *mode*: "all" every request (INFO below 400), "errors"
    only answers of 400 and up and requests slower than SLOW_REQUEST_S, "off"
    none.  Python's logging costs ~15 % of the server's CPU at a thousand
    requests a second (bench/README.md, "REST"), which is why "errors" is the
    default.  *redact* gives the URL as logged (token and ticket values out)."""

    def log_request(handler: tornado.web.RequestHandler) -> None:
        status = handler.get_status()
        request = handler.request
        took = request.request_time()
        route = getattr(handler, "route", "other")
        code = getattr(handler, "error_code", "")
        if metrics is not None:
            metrics.observe_request(request.method, route, status, code, took)
        if mode == "off" or (mode == "errors" and status < 400 and (took < SLOW_REQUEST_S or route in STREAMS)):
            return
        log = access_log.info if status < 400 else access_log.warning if status < 500 else access_log.error
        uri = redact(request)
        http = {"request_id": getattr(handler, "request_id", None), "method": request.method, "route": route,
                "path": uri, "status": status, "duration_ms": round(1000.0 * took, 2),
                "remote_ip": request.remote_ip}
        if code:
            http["code"] = code
        log("%d %s %s (%s) %.2fms", status, request.method, uri, request.remote_ip, 1000.0 * took,
            extra={"http": http})

    return log_request
