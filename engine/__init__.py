"""The progress engine: trees of progress nodes in Redis, written only by Lua scripts.

Start at engine.py (the Engine API); the roll-up math is lua/include/rollup.lua.
"""
from .engine import APPLIED, STALE, ApplyResult, DeleteResult, Engine, Event, now_ms
from .errors import (
    InvalidKey,
    InvalidUpdate,
    NotFound,
    ProgressError,
    QuotaExceeded,
    StorageUnavailable,
    TooLarge,
)
from .keys import check_key, is_namespace, tree_root
from .limits import Limits

__all__ = [
    "APPLIED", "STALE", "ApplyResult", "DeleteResult", "Engine", "Event", "InvalidKey", "InvalidUpdate",
    "Limits", "NotFound", "ProgressError", "QuotaExceeded", "StorageUnavailable", "TooLarge", "check_key",
    "is_namespace", "now_ms", "tree_root",
]
