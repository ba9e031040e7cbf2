"""Sending updates over REST: ``POST /status`` with a JSON array, on one keep-alive connection."""
from __future__ import annotations

import secrets

import orjson

from .errors import Refusal, SendError
from .http import HttpConnection, HttpError

#: Statuses worth trying again: rate-limited, and the service or a proxy in front of it unavailable.
RETRYABLE = {408, 429, 502, 503, 504}
#: Bodies are split beyond this size (the service takes 4 MiB at most).
MAX_BODY_BYTES = 1 << 20
ENCODE_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def encode_items(items: list[tuple[str, dict]]) -> tuple[list[tuple[str, bytes]], list[Refusal]]:
    """Each update as JSON with its ``key``; those that cannot be encoded are refused here."""
    encoded, refused = [], []
    for key, fields in items:
        if "key" in fields:
            refused.append(Refusal(key, "reserved-field", "'key' is reserved: a reporter's key names its node"))
            continue
        try:
            encoded.append((key, orjson.dumps({"key": key, **fields}, option=ENCODE_OPTIONS)))
        except TypeError as e:
            refused.append(Refusal(key, "not-json", f"the update cannot be encoded as JSON: {e}"))
    return encoded, refused


def split(encoded: list[tuple[str, bytes]], limit: int = MAX_BODY_BYTES):
    """Runs of *encoded* whose JSON array stays under *limit* bytes (one item at least)."""
    run, size = [], 2
    for item in encoded:
        if run and size + len(item[1]) + 1 > limit:
            yield run
            run, size = [], 2
        run.append(item)
        size += len(item[1]) + 1
    if run:
        yield run


def error_of(status: int, body: bytes) -> tuple[str, str]:
    """The service's error code and message from an error answer (or what a proxy said)."""
    try:
        error = orjson.loads(body)["error"]
        return str(error["code"]), str(error["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"http-{status}", body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"


class RestTransport:
    """POSTs batches to ``<base>/status`` (with ``Authorization: Bearer`` when given a token)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = HttpConnection(base_url, headers=headers, timeout=timeout)
        self.where = f"{base_url.rstrip('/')}/status"

    async def send(self, items: list[tuple[str, dict]]) -> list[Refusal]:
        """Deliver *items*; returns the updates the service refused (one by one, with its reason).

        Raises SendError when the whole request failed.
        """
        encoded, refused = encode_items(items)
        for run in split(encoded):
            body = b"[" + b",".join(data for _, data in run) + b"]"
            refused += await self._post(body)
        return refused

    async def _post(self, body: bytes) -> list[Refusal]:
        request_id = secrets.token_hex(8)  # the service logs it with the request
        try:
            response = await self.http.request("POST", "/status", body, headers={"X-Request-Id": request_id})
        except HttpError as e:
            raise SendError(f"POST {self.where}: {e}", retryable=True) from None
        if response.status != 200:
            code, message = error_of(response.status, response.body)
            message = f"{message} (request {request_id})"
            retry_after = None
            if response.status in RETRYABLE:
                try:
                    retry_after = float(response.headers.get("retry-after", ""))
                except ValueError:
                    pass
            raise SendError(f"POST {self.where}: {response.status} {code}: {message}",
                            retryable=response.status in RETRYABLE, code=code, retry_after=retry_after)
        try:
            results = orjson.loads(response.body)["results"]
            return [Refusal(str(r.get("key", "")), str(r["error"]["code"]), str(r["error"]["message"]))
                    for r in results if not r.get("ok")]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise SendError(f"POST {self.where}: the answer is not a batch result: {response.body[:200]!r}",
                            retryable=False, code="bad-answer") from None

    async def close(self) -> None:
        await self.http.close()
