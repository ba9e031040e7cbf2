"""A small keep-alive HTTP/1.1 client on asyncio streams.

Tornado's simple HTTP client opens a connection per request, and aiohttp is
not a dependency of the package, so the reporter talks HTTP itself: one
connection per origin, reused request after request, requests sent one at a
time.  It speaks just what the progress service needs: ``Content-Length``
and chunked bodies, gzip answers, ``http`` and ``https``.
"""
from __future__ import annotations

import asyncio
import gzip
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Largest status line or header line, and largest answer, accepted.
MAX_LINE = 64 * 1024
MAX_BODY = 256 * 1024 * 1024


class HttpError(Exception):
    """The exchange failed below HTTP: connecting, a cut connection, a timeout, a garbled answer."""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""


class HttpConnection:
    """One keep-alive connection to the origin of *base_url*.

    ``request()`` may be called concurrently: requests queue on a lock and go
    one after the other on the same connection.  A connection the server
    closed while idle is replaced, and a request that found it so is sent
    once more on the new one.
    """

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.tls else 80)
        self.base_path = parts.path.rstrip("/")
        host_header = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port:
            host_header += f":{parts.port}"
        self.headers = {"Host": host_header, "User-Agent": "sca-progress-client", **(headers or {})}
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.connections_opened = 0
        self.requests_sent = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        """Send one request (*path* below the base URL's path) and read its answer.

        Raises HttpError when no answer could be had; any HTTP status is an answer.
        """
        head = self._head(method, path, body, headers)
        async with self._lock:
            try:
                return await asyncio.wait_for(self._exchange(head, body), self.timeout)
            except asyncio.TimeoutError:
                await self._drop()
                raise HttpError(f"{method} {path}: no answer within {self.timeout:g} s") from None

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    # -- internals ------------------------------------------------------------------

    def _head(self, method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> bytes:
        all_headers = {**self.headers, **(headers or {})}
        if body is not None or method in ("POST", "PUT", "PATCH"):
            all_headers["Content-Length"] = str(len(body or b""))
        all_headers.setdefault("Accept-Encoding", "gzip")
        lines = [f"{method} {self.base_path}{path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in all_headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _exchange(self, head: bytes, body: bytes | None) -> Response:
        reused = self._writer is not None
        if not reused:
            await self._connect()
        try:
            return await self._send_and_read(head, body)
        except (OSError, asyncio.IncompleteReadError, HttpError) as e:
            await self._drop()
            # An idle keep-alive connection may have been closed by the server just
            # before this request went out: try once more on a fresh one.
            if reused and _nothing_read(e):
                await self._connect()
                try:
                    return await self._send_and_read(head, body)
                except (OSError, asyncio.IncompleteReadError, HttpError) as e2:
                    await self._drop()
                    raise _as_http_error(e2) from None
            raise _as_http_error(e) from None

    async def _connect(self) -> None:
        context = None
        if self.tls:
            context = self.ssl_context or ssl.create_default_context()
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=context, limit=MAX_LINE,
                server_hostname=self.host if self.tls else None)
        except (OSError, ssl.SSLError) as e:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {e}") from None
        self.connections_opened += 1

    async def _send_and_read(self, head: bytes, body: bytes | None) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(head + (body or b""))
        await self._writer.drain()
        self.requests_sent += 1
        response, keep_alive = await self._read_response(self._reader)
        if not keep_alive:
            await self._drop()
        return response

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            status_line = await _read_line(reader)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise
            raise _NothingRead("the server closed the connection before answering") from None
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        while True:
            line = await _read_line(reader)
            if not line:
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(f"bad header line: {line[:80]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        if status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise HttpError(f"bad Content-Length: {headers['content-length']!r}") from None
            if length > MAX_BODY:
                raise HttpError(f"answer of {length} bytes is too large")
            body = await reader.readexactly(length)
        else:  # the body runs to the end of the connection
            body = await _read_to_end(reader)
            keep_alive = False
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError) as e:
                raise HttpError(f"bad gzip body: {e}") from None
        return Response(status, headers, body), keep_alive

    async def _drop(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass


class _NothingRead(HttpError):
    """The connection ended before the first byte of the answer."""


def _nothing_read(e: BaseException) -> bool:
    if isinstance(e, _NothingRead):
        return True
    if isinstance(e, asyncio.IncompleteReadError):
        return not e.partial
    return isinstance(e, (ConnectionResetError, BrokenPipeError))


def _as_http_error(e: BaseException) -> HttpError:
    if isinstance(e, HttpError):
        return e
    if isinstance(e, asyncio.IncompleteReadError):
        return HttpError("the server closed the connection in the middle of its answer")
    return HttpError(f"connection lost: {e or type(e).__name__}")


async def _read_line(reader: asyncio.StreamReader) -> str:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(f"a line of the answer is longer than {MAX_LINE} bytes") from None
    return line.rstrip(b"\r\n").decode("latin-1")


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    parts, total = [], 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > MAX_BODY:
            raise HttpError("answer is too large")
        parts.append(chunk)
    return b"".join(parts)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts, total = [], 0
    while True:
        size_line = await _read_line(reader)
        try:
            size = int(size_line.split(";", 1)[0], 16)
        except ValueError:
            raise HttpError(f"bad chunk size: {size_line[:40]!r}") from None
        if size == 0:
            while await _read_line(reader):  # trailers, up to the empty line
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise HttpError("chunked answer is too large")
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)  # the CRLF after each chunk
