"""The engine's exceptions, and the one place that maps script errors onto them.

    ProgressError
    ├── InvalidUpdate        a client sent something the service refuses (a 4xx)
    │   ├── InvalidKey
    │   ├── TooLarge
    │   └── QuotaExceeded    past a configured quota (403)
    ├── Unauthorized         no valid bearer token (401)
    ├── Forbidden            a valid token whose scopes do not cover the key (403)
    ├── RateLimited          a token past its rate limit (429)
    ├── NotFound             no node at that key (404)
    ├── ScriptFailed         a script failed for a reason no input explains (a bug: 500)
    ├── StoredFormatError    the Redis holds trees in a record format this version cannot read
    └── StorageUnavailable   Redis cannot be reached (503): retried by the batcher

Every InvalidUpdate carries a short machine-readable ``code`` and a message
naming what was wrong; REST renders them as ``{"error": {"code", "message"}}``
and AMQP puts them in the dead-letter reason header.
"""
from __future__ import annotations

from contextlib import contextmanager

from redis import exceptions as rex


class ProgressError(Exception):
    code = "error"
    status = 500

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class InvalidUpdate(ProgressError):
    code = "invalid"
    status = 400


class InvalidKey(InvalidUpdate):
    code = "bad-key"


class TooLarge(InvalidUpdate):
    code = "too-large"
    status = 413


class QuotaExceeded(InvalidUpdate):
    code = "quota"
    status = 403


class Unauthorized(ProgressError):
    code = "unauthorized"
    status = 401


class Forbidden(ProgressError):
    code = "forbidden"
    status = 403


class RateLimited(ProgressError):
    code = "rate-limited"
    status = 429


class NotFound(ProgressError):
    code = "not-found"
    status = 404


class StorageUnavailable(ProgressError):
    code = "storage-unavailable"
    status = 503


class StoredFormatError(ProgressError):
    code = "stored-format"
    status = 500


class ScriptFailed(ProgressError):
    code = "script-failed"
    status = 500


def invalid(code: str, message: str) -> InvalidUpdate:
    """An InvalidUpdate (400) with its machine-readable code."""
    return InvalidUpdate(message, code=code)


def json_error(e: Exception) -> InvalidUpdate:
    """The 400 for a body orjson could not parse (*e*, its JSONDecodeError)."""
    if "depth limit" in str(e):
        return InvalidUpdate("the body nests arrays and objects more than 1,024 levels deep (a field's value "
                             "may nest at most 32)", code="value-too-deep")
    return InvalidUpdate(f"the body is not JSON: {e}", code="bad-json")


@contextmanager
def redis_errors():
    """Redis calls inside: a lost or refused connection becomes StorageUnavailable,
    any other Redis error ScriptFailed (a 500, never retried as an outage)."""
    try:
        yield
    except (rex.ConnectionError, rex.TimeoutError, OSError) as e:
        raise StorageUnavailable(f"redis unavailable: {e}") from e
    except rex.RedisError as e:
        raise ScriptFailed(f"redis failed: {e}") from e


# Error replies our Lua scripts raise, as "<code> <detail>" (see each script's
# header).  They can only happen when a caller bypasses the Python validation.
SCRIPT_ERROR_CODES = frozenset(
    {"bad-batch", "bad-key", "bad-progress", "bad-weight", "bad-status", "reserved-field", "bad-value",
     "too-many-nodes"}
)


def from_script_error(text: str) -> ProgressError:
    """Turn a script's error reply into the matching exception."""
    text = text.removeprefix("ERR ").strip()
    code, _, detail = text.partition(" ")
    if code in SCRIPT_ERROR_CODES:
        return InvalidUpdate(f"{code}: {detail}" if detail else code, code=code)
    if text.startswith(("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN")):
        return StorageUnavailable(f"redis unavailable: {text}")
    return ScriptFailed(f"redis script failed: {text}")
