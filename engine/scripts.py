"""Loading the Lua scripts of lua/ and calling them by SHA on one pipeline.

Each entry script may pull shared code with a line ``--@include <name>``,
which is replaced by ``lua/include/<name>.lua``.  Includes nest; each one is
inlined once per script (the first time it is reached) and a cycle is an
error, so every script is one self-contained chunk for ``SCRIPT LOAD``.
"""
from __future__ import annotations

import hashlib
import re
from functools import partial
from collections.abc import Sequence
from importlib import resources

import msgpack
from redis import exceptions as rex

from .errors import ProgressError, ScriptFailed, StorageUnavailable, from_script_error, redis_errors

SCRIPT_NAMES = ("apply_updates", "read_nodes", "delete_subtree", "collect_garbage", "index_trees")
_INCLUDE = re.compile(r"^--@include (\w+)[ \t]*$", re.MULTILINE)

#: Packs script arguments.  Redis's cmsgpack knows no bin type, so bytes go
#: out as msgpack raw strings, like str.
pack = partial(msgpack.packb, use_bin_type=False)
#: Unpacks script replies, leaving strings as bytes.
unpack = partial(msgpack.unpackb, raw=True)

#: One script call: (script name, keys, args).
Call = tuple[str, Sequence, Sequence]


def _read(relative: str) -> str:
    return resources.files("sca_progress.lua").joinpath(relative).read_text(encoding="utf-8")


def render(name: str, read=_read) -> str:
    """The source of script *name* with every include inlined once."""
    included: set[str] = set()

    def expand(text: str, stack: tuple[str, ...]) -> str:
        def include(match: re.Match) -> str:
            inc = match.group(1)
            if inc in stack:
                raise ValueError(f"include cycle in {name}.lua: {' -> '.join(stack + (inc,))}")
            if inc in included:
                return f"-- ({inc} included above)"
            included.add(inc)
            return expand(read(f"include/{inc}.lua"), stack + (inc,))

        return _INCLUDE.sub(include, text)

    return expand(read(f"{name}.lua"), (name,))


class Scripts:
    """The service's scripts, rendered once; call them by SHA, reload on NOSCRIPT."""

    def __init__(self) -> None:
        self.source = {name: render(name) for name in SCRIPT_NAMES}
        self.sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.source.items()}

    async def load(self, redis) -> None:
        """SCRIPT LOAD every script (after a start, or a Redis restart)."""
        with redis_errors():
            async with redis.pipeline(transaction=False) as pipe:
                for src in self.source.values():
                    pipe.script_load(src)
                await pipe.execute()

    async def run(self, redis, calls: Sequence[Call]) -> list:
        """Run *calls* in one round trip; return each call's reply in order.

        A reply is the script's return value, or a ProgressError when that one
        call failed (the others still ran: the pipeline is not a transaction).
        Calls that met NOSCRIPT are retried once after reloading the scripts.
        Raises StorageUnavailable when Redis cannot be reached.
        """
        replies = await self._execute(redis, calls)
        retry = [i for i, r in enumerate(replies) if isinstance(r, rex.NoScriptError)]
        if retry:
            await self.load(redis)
            again = await self._execute(redis, [calls[i] for i in retry])
            for i, r in zip(retry, again):
                replies[i] = r
        return [_reply(r) for r in replies]

    async def _execute(self, redis, calls: Sequence[Call]) -> list:
        with redis_errors():
            async with redis.pipeline(transaction=False) as pipe:
                for name, keys, args in calls:
                    pipe.evalsha(self.sha[name], len(keys), *keys, *args)
                return await pipe.execute(raise_on_error=False)


def _reply(r):
    if isinstance(r, rex.ResponseError):
        return from_script_error(str(r))
    if isinstance(r, (rex.ConnectionError, rex.TimeoutError)):
        return StorageUnavailable(f"redis unavailable: {r}")
    if isinstance(r, Exception) and not isinstance(r, ProgressError):
        return ScriptFailed(f"redis failed: {r!r}")
    return r
