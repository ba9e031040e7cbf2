"""Error answers and keep-alive: a refused request never breaks the client's
connection without saying so, and every error gets its JSON body.

A raw HTTP/1.1 client here, so the test sees exactly what travels: whether
an answer says `Connection: close`, and whether the next request on the same
connection works.
"""
from __future__ import annotations

import asyncio

import orjson
import pytest

from sca_progress.server.handlers import DISCARD_FACTOR
from sca_progress.server.settings import Settings

from .test_auth import SECRET, running, stopping, token


class Raw:
    """One keep-alive connection; request() -> (status, headers, body)."""

    def __init__(self, base: str) -> None:
        host, port = base.split("//")[1].split(":")
        self.addr = (host, int(port))
        self.reader = self.writer = None

    async def open(self) -> "Raw":
        self.reader, self.writer = await asyncio.open_connection(*self.addr)
        return self

    async def send(self, head: bytes, body: bytes = b"") -> None:
        self.writer.write(head + body)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict, bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return int(lines[0].split()[1]), headers, body

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode(), body)
        return await self.answer()

    async def closed(self) -> bool:
        """True when the server has closed its side."""
        try:
            return await asyncio.wait_for(self.reader.read(1), 2) == b""
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


def usable_or_said_so(headers: dict) -> bool:
    return headers.get("connection", "").lower() != "close"


async def refused_then_closed(base: str, request: bytes, status: int, code: str) -> dict:
    """Send raw *request* bytes: the JSON error (*status*, *code*) must say
    `Connection: close`, and the server must then close.  Its headers."""
    conn = await Raw(base).open()
    try:
        await conn.send(request)
        got_status, headers, body = await conn.answer()
        assert got_status == status, (got_status, headers, body)
        assert orjson.loads(body)["error"]["code"] == code and headers["content-type"] == "application/json"
        assert headers["connection"].lower() == "close" and await conn.closed()
        return headers
    finally:
        conn.close()


@pytest.fixture
async def auth_server(redis_url, prefix):
    base, app, http = await running(Settings(redis_url=redis_url, prefix=prefix, jwt_secret=SECRET))
    yield base
    await stopping(app, http)
    await app.settings["service"].close()


async def test_a_refused_request_keeps_the_connection_usable(auth_server):
    """401 (no or a bad token) and 403 (scopes, a foreign Origin) on every method:
    the same connection then serves the next request."""
    body = orjson.dumps({"progress": 0.5})
    good = {"Authorization": f"Bearer {token('write:_k read:_k')}", "Content-Type": "application/json"}
    refusals = [
        ("POST", "/status/_k.j.a", body, {}),
        ("POST", "/status/_k.j.a", body, {"Authorization": "Bearer nonsense"}),
        ("POST", "/status", orjson.dumps([{"key": "_k.j.a", "progress": 1}]), {}),
        ("POST", "/status/_k.j.a", body, {**good, "Origin": "https://evil.example"}),
        ("POST", "/status/_other.j.a", body, good),
        ("GET", "/status/_k.j", b"", {}),
        ("DELETE", "/status/_k.j", b"", {}),
        ("POST", "/auth/ticket", b"", {}),
    ]
    conn = await Raw(auth_server).open()
    try:
        for method, path, data, headers in refusals:
            status, got, answer = await conn.request(method, path, data, headers)
            assert status in (401, 403), (method, path, status)
            assert orjson.loads(answer)["error"]["code"], answer
            if not usable_or_said_so(got):
                assert await conn.closed()
                conn.close()
                conn = await Raw(auth_server).open()
                continue
            status, _, _ = await conn.request("POST", "/status/_k.j.a", body, good)
            assert status == 200, (method, path)
    finally:
        conn.close()


@pytest.mark.parametrize("length,expect", [(DISCARD_FACTOR, ""), (1, "Expect: 100-continue\r\n")])
async def test_a_body_too_large_by_its_length_says_connection_close(server, length, expect):
    """Refused at once, before the body is sent: far over the limit, or over it
    with Expect: 100-continue (the client waits for the word to send)."""
    base, app = server
    limit = app.settings["engine"].limits.max_body_bytes
    conn = await Raw(base).open()
    try:
        await conn.send(f"POST /status/_big.j.a HTTP/1.1\r\nHost: t\r\n{expect}"
                        f"Content-Length: {length * limit + 1}\r\n\r\n".encode())
        status, headers, body = await conn.answer()
        assert status == 413 and orjson.loads(body)["error"]["code"] == "too-large"
        assert headers["connection"].lower() == "close" and await conn.closed()
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/status/_big.j.a", "/status"])
async def test_a_body_too_large_sent_whole_before_reading_gets_its_413(server, path):
    """A client that sends its whole body before it reads (urllib, most job
    scripts) gets the 413, not a reset, and the connection stays usable."""
    base, app = server
    limit = app.settings["engine"].limits.max_body_bytes
    conn = await Raw(base).open()
    try:
        status, headers, body = await conn.request("POST", path, b"x" * (limit + 1))
        assert status == 413 and orjson.loads(body)["error"]["code"] == "too-large"
        assert usable_or_said_so(headers)
        assert (await conn.request("GET", "/health"))[0] == 200
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["FOO", "TRACE", "post"])
@pytest.mark.parametrize("body", [b"", b'{"progress": 0.5}'])
async def test_an_unknown_method_gets_405_and_says_connection_close(server, method, body):
    """Tornado answers a method it does not know before the body is read, so
    the connection closes after the 405: the answer says so."""
    base, _ = server
    for path in ("/status/_m.j.a", "/status", "/status/_m.j.a/history"):
        conn = await Raw(base).open()
        try:
            status, headers, answer = await conn.request(method, path, body, {"Content-Length": str(len(body))})
            assert status == 405 and orjson.loads(answer)["error"]["code"] == "http-405"
            if not usable_or_said_so(headers):
                assert await conn.closed()
            else:
                assert (await conn.request("GET", "/health"))[0] == 200
        finally:
            conn.close()


@pytest.mark.parametrize("path", ["/status/_big.j.a", "/status"])
async def test_a_chunked_body_too_large_gets_its_413(server, path, caplog):
    """No Content-Length to refuse it by: the rest of the body is read and dropped,
    the 413 comes, the connection stays usable, and nothing stays pending."""
    base, app = server
    limit = app.settings["engine"].limits.max_body_bytes
    conn = await Raw(base).open()
    try:
        await conn.send(f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 65536
        for _ in range(limit // len(chunk) + 16):  # 5 MiB against a 4 MiB limit
            await conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await conn.send(b"0\r\n\r\n")
        status, headers, body = await conn.answer()
        assert status == 413 and orjson.loads(body)["error"]["code"] == "too-large"
        assert usable_or_said_so(headers)
        assert (await conn.request("GET", "/health"))[0] == 200
    finally:
        conn.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    conn = await Raw(base).open()  # the server still serves
    assert (await conn.request("GET", "/health"))[0] == 200
    conn.close()


async def test_a_url_far_too_long_gets_414(server):
    base, _ = server
    conn = await Raw(base).open()
    try:
        status, headers, body = await conn.request("GET", "/status/_u." + "x" * 100_000)
        assert status == 414 and orjson.loads(body)["error"]["code"] == "http-414"
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_a_too_long_url_or_too_many_header_bytes_keep_the_connection(server, method):
    """414 and 431 are answered on routes that stream their body too: the
    connection stays usable (or the answer says it closes)."""
    base, _ = server
    body = b'{"progress": 0.5}' if method == "POST" else b""
    asks = [(f"/status/_u.{'x' * 9000}", {}, 414), (f"/status/_u.{'x' * 9000}/history", {}, 414),
            ("/status/_u.j.a", {"X-Filler": "y" * 33_000}, 431)]
    conn = await Raw(base).open()
    try:
        for path, headers, expected in asks:
            status, got, answer = await conn.request(method, path, body, headers)
            assert status == expected and orjson.loads(answer)["error"]["code"] == f"http-{expected}"
            assert usable_or_said_so(got), (method, path)
            assert (await conn.request("GET", "/health"))[0] == 200
    finally:
        conn.close()


async def test_head_and_wrong_methods(server, http):
    base, _ = server
    await http("POST", f"{base}/status/_h.j.a", {"progress": 0.5})
    conn = await Raw(base).open()
    try:
        for path in (b"/status/_h.j", b"/status/_h.j.a/history", b"/health", b"/health/live", b"/health/ready"):
            await conn.send(b"HEAD " + path + b" HTTP/1.1\r\nHost: t\r\n\r\n")
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200") and b"application/json" in head, head
        status, headers, body = await conn.request("PUT", "/status/_h.j", b"{}")
        assert status == 405 and orjson.loads(body)["error"]["code"] == "http-405"
        assert set(headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST", "DELETE"}
        status, headers, body = await conn.request("DELETE", "/status", b"")
        assert status == 405 and "DELETE" not in headers["allow"] and "POST" in headers["allow"]
    finally:
        conn.close()


FRAMINGS = [
    ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, 400),
    ({"Transfer-Encoding": "gzip"}, 400),
    ({"Transfer-Encoding": "chunked, chunked"}, 400),
    ({"Content-Length": "5, 6"}, 400),
    ({"Content-Length": "abc"}, 400),
    ({"Content-Length": "-1"}, 400),
    ({"Content-Length": str(200 * 1024 * 1024)}, 413),
]


@pytest.mark.parametrize("method,path", [("POST", "/status/_f.j.a"), ("POST", "/status"), ("GET", "/status/_f.j"),
                                         ("GET", "/health")])
@pytest.mark.parametrize("headers,expected", FRAMINGS)
async def test_a_request_framed_wrongly_gets_json_and_connection_close(server, method, path, headers, expected):
    """A body whose length cannot be known safely (both Content-Length and
    Transfer-Encoding, an unknown coding, a length that is not one number)
    is not read: a JSON 400 that says `Connection: close`, then the close.
    (Tornado alone answers such a request with an empty 400 that does not
    say it closes.)"""
    base, _ = server
    head = [f"{method} {path} HTTP/1.1", "Host: t", "X-Request-Id: framing-1",
            *(f"{k}: {v}" for k, v in headers.items())]
    got = await refused_then_closed(base, ("\r\n".join(head) + "\r\n\r\n").encode() + b"0\r\n\r\n", expected,
                                    "bad-framing" if expected == 400 else "too-large")
    assert got["x-request-id"] == "framing-1" and "date" in got
    conn = await Raw(base).open()  # nothing was applied, and the server still serves
    assert (await conn.request("GET", "/status/_f.j.a"))[0] == 404
    conn.close()


@pytest.mark.parametrize("path", ["/status/_f.j.a", "/status/_f.j.a?x=1", "/health"])
async def test_a_length_of_non_ascii_digits_is_bad_framing(server, path):
    """'²' (0xb2 in latin-1) is a digit to str.isdigit but not to int()."""
    base, _ = server
    await refused_then_closed(base, f"POST {path} HTTP/1.1\r\nHost: t\r\n".encode()
                              + b"Content-Length: \xb2\r\n\r\n{}", 400, "bad-framing")


async def test_a_target_in_absolute_form_is_routed_by_its_path(server):
    """RFC 9112, 3.2.2: a server accepts 'POST http://host/status/x' (what proxies send)."""
    base, _ = server
    conn = await Raw(base).open()
    try:
        status, _, body = await conn.request("POST", f"{base}/status/_abs.j.a", b'{"progress": 0.5}')
        assert status == 200, body
        status, _, body = await conn.request("GET", f"{base}/status/_abs.j.a?depth=1")
        assert status == 200 and orjson.loads(body)["progress"] == 0.5
        assert (await conn.request("GET", "HTTP://example.org/health"))[0] == 200
    finally:
        conn.close()


@pytest.mark.parametrize("request_bytes", [
    b"POST /status/_bad.j.a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",
    b"HELLO\r\n\r\n",
])
async def test_a_request_that_is_not_http_gets_a_json_400_that_says_connection_close(server, request_bytes):
    """What Tornado cannot parse (a chunk size, a header line, a start line)."""
    base, _ = server
    await refused_then_closed(base, request_bytes, 400, "bad-request")
    conn = await Raw(base).open()
    try:
        status, _, metrics = await conn.request("GET", "/metrics")
        assert status == 200 and b'code="bad-request"' in metrics  # counted like any answer
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/", "/ui/_u.j", "/static/main.js"])
async def test_the_ui_routes_answer_405_in_json_with_allow(server, path):
    base, _ = server
    conn = await Raw(base).open()
    try:
        status, headers, body = await conn.request("PUT", path, b"{}")
        assert status == 405 and orjson.loads(body)["error"]["code"] == "http-405"
        assert headers["allow"] == "GET, HEAD"
    finally:
        conn.close()


async def test_a_body_cut_short_frees_its_handler(server, caplog):
    """A client that leaves mid-body: the handler waiting for the rest ends
    (it used to wait until the process exited, then was logged as a 500)."""
    base, app = server
    service = app.settings["service"]

    def handlers_waiting() -> list:
        return [t for t in asyncio.all_tasks() if "_execute" in getattr(t.get_coro(), "__qualname__", "")]

    for path in ("/status/_cut.j.a?x=1", "/status"):
        conn = await Raw(base).open()
        await conn.send(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n".encode() + b'{"progr')
        await asyncio.sleep(0.1)
        conn.close()
    deadline = asyncio.get_running_loop().time() + 5
    while (service.answering or handlers_waiting()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not service.answering and not handlers_waiting()
    assert not [r for r in caplog.records if " 500 " in r.getMessage()]


async def test_while_draining_every_answer_says_connection_close(server):
    """Shutting down: answers say Connection: close, on every route, also for a
    request routed before the drain began, and the connection then closes."""
    base, app = server
    service = app.settings["service"]
    try:
        conn = await Raw(base).open()  # routed before the drain, answered during it
        await conn.send(b"POST /status/_dr.j.a?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 17\r\n\r\n")
        await asyncio.sleep(0.1)
        service.draining = True
        await conn.send(b'{"progress": 0.5}')
        status, headers, _ = await conn.answer()
        assert status == 200 and headers["connection"].lower() == "close" and await conn.closed()
        conn.close()
        for method, path in (("GET", "/status/_dr.j"), ("POST", "/status/_dr.j.b"), ("GET", "/"),
                             ("GET", "/health")):
            conn = await Raw(base).open()
            status, headers, _ = await conn.request(method, path, b'{"progress": 1}' if method == "POST" else b"")
            assert status == 200 and headers.get("connection", "").lower() == "close", (path, headers)
            assert await conn.closed()
            conn.close()
    finally:
        service.draining = False
