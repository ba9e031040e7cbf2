"""The engine's calls on a Redis Cluster: one lean link per master, each call
routed by the hash slot of its first key.

Every script call touches one slot (one tree, ``{root}``, or one namespace
index, ``{ns}``: engine/keys.py), so a call goes whole to the master owning
that slot.  The calls of one ``execute`` are grouped per master and sent as
one write to each, concurrently; replies come back in the callers' order.

Resharding and failover:

* ``MOVED <slot> <host:port>``: the slot lives elsewhere now.  The slot map
  is read again (``CLUSTER SLOTS``) and the call is sent to its new owner.
* ``ASK <slot> <host:port>``: the slot is being migrated and this key has
  moved already: the call goes to the target, preceded by ``ASKING`` on the
  same connection, without changing the map.
* ``TRYAGAIN`` (a multi-key call during a migration, its keys split for a
  moment), ``CLUSTERDOWN`` (a failover under way) and a script's "non local
  key" (it touched a key of its migrating slot that has moved already):
  retried after a short wait, for up to BUSY_WAIT_S in all.

A call that was redirected was not run by the node that redirected it, and a
script that met a non-local key failed before writing anything (the scripts
touch every key they will write before the first write: see
lua/apply_updates.lua), so retrying never applies an update twice.
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from redis import exceptions as rex
from redis.crc import key_slot

from .link import RedisLink

#: Redirections and waits a call may go through before its error is returned.
REDIRECTS = 16
#: Seconds to wait before retrying TRYAGAIN, CLUSTERDOWN or a non-local key,
#: and how long such a call keeps being retried (a slot migration, a failover).
RETRY_WAIT_S = 0.05
BUSY_WAIT_S = 15.0
_KEYED_BY_POSITION = {b"FCALL": 3, b"FCALL_RO": 3, b"EVALSHA": 3, b"EVAL": 3}


def command_slot(command: tuple) -> int | None:
    """The hash slot a command's first key is in (None: it has no key)."""
    name = command[0].upper() if isinstance(command[0], bytes) else str(command[0]).upper().encode()
    at = _KEYED_BY_POSITION.get(name)
    if at is not None:
        if int(command[2]) == 0:
            return None
        key = command[at]
    elif len(command) > 1:
        key = command[1]  # SPUBLISH channel, EXISTS key, HGET key, ...
    else:
        return None
    return key_slot(key if isinstance(key, bytes) else str(key).encode())


def _redirect(reply) -> tuple[str, int, tuple[str, int]] | None:
    """('MOVED' or 'ASK', slot, (host, port)) of a redirection error reply."""
    if not isinstance(reply, rex.ResponseError):
        return None
    text = str(reply)
    if not text.startswith(("MOVED ", "ASK ")):
        return None
    kind, slot, where = text.split()[:3]
    host, _, port = where.rpartition(":")
    return kind, int(slot), (host, int(port))


def _busy(reply) -> bool:
    if not isinstance(reply, rex.ResponseError):
        return False
    text = str(reply)
    return text.startswith(("TRYAGAIN", "CLUSTERDOWN")) or "non local key" in text


class ClusterLink:
    """RedisLink's interface (execute, close) over every master of a cluster."""

    def __init__(self, client) -> None:
        """*client*: a ``redis.asyncio.RedisCluster`` (its startup nodes and
        connection options: password, TLS, timeouts)."""
        self.client = client
        self._owner: list[tuple[str, int] | None] = [None] * 16384
        self._masters: list[tuple[str, int]] = []  # the owners in _owner, sorted; empty until the map is read
        self._links: dict[tuple[str, int], RedisLink] = {}
        self._refreshing: asyncio.Future | None = None
        self.connects = 0
        self.failures = 0
        #: Calls sent again, by why: MOVED, ASK, busy (TRYAGAIN, CLUSTERDOWN, non-local key).
        self.retried = {"MOVED": 0, "ASK": 0, "busy": 0}

    # -- the slot map ---------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the slot map again (once, however many callers ask at the same time)."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._read_slots())
        try:
            await asyncio.shield(self._refreshing)
        finally:
            if self._refreshing is not None and self._refreshing.done():
                self._refreshing = None

    async def _read_slots(self) -> None:
        await self.client.initialize()
        nodes = list(self.client.get_primaries())
        random.shuffle(nodes)
        last: Exception | None = None
        for node in nodes:
            try:
                [reply] = await self._link((node.host, node.port)).execute([("CLUSTER", "SLOTS")])
            except (rex.ConnectionError, rex.TimeoutError, OSError) as e:
                last = e
                continue
            if isinstance(reply, Exception):
                last = reply
                continue
            owner: list[tuple[str, int] | None] = [None] * 16384
            for start, end, master, *_replicas in reply:
                host = master[0].decode() if isinstance(master[0], bytes) else master[0]
                addr = (host or node.host, int(master[1]))
                for slot in range(int(start), int(end) + 1):
                    owner[slot] = addr
            self._owner = owner
            self._masters = sorted({a for a in owner if a is not None})
            return
        raise rex.ConnectionError(f"no master of the cluster answered CLUSTER SLOTS: {last!r}")

    def masters(self) -> list[tuple[str, int]]:
        return self._masters

    def _link(self, addr: tuple[str, int]) -> RedisLink:
        link = self._links.get(addr)
        if link is None:
            node = self.client.get_node(host=addr[0], port=addr[1])
            known = node or self.client.get_default_node()  # unknown: a new master after resharding
            kwargs = {**known.connection_kwargs, "host": addr[0], "port": addr[1]}
            link = self._links[addr] = RedisLink.for_connection(kwargs, known.connection_class)
            self.connects += 1
        return link

    # -- calls --------------------------------------------------------------------------

    async def execute(self, commands: list) -> list:
        """Send *commands*, each to the master of its slot; their replies in order."""
        if not self._masters:
            await self.refresh()
        replies: list = [None] * len(commands)
        todo = list(range(len(commands)))
        asking: dict[int, tuple[str, int]] = {}
        redirects, busy_until = 0, None
        while True:
            by_node: dict[tuple[str, int], list[int]] = defaultdict(list)
            fallback = self.masters()[0]
            for i in todo:
                slot = command_slot(commands[i])
                by_node[asking.get(i) or (self._owner[slot] if slot is not None else fallback) or fallback].append(i)
            results = await asyncio.gather(*(self._send(addr, idx, commands, asking) for addr, idx in by_node.items()))
            again, moved, busy = [], False, False
            asking = {}
            now = asyncio.get_running_loop().time()
            for idx, got in results:
                for i, reply in zip(idx, got):
                    redirect = _redirect(reply)
                    if redirect is not None and redirects < REDIRECTS:
                        kind, _slot, addr = redirect
                        self.retried[kind] += 1
                        if kind == "ASK":
                            asking[i] = addr
                        else:
                            moved = True
                        again.append(i)
                    elif _busy(reply) and (busy_until is None or now < busy_until):
                        busy = True
                        self.retried["busy"] += 1
                        again.append(i)
                    else:
                        replies[i] = reply
            if not again:
                return replies
            if moved or asking:
                redirects += 1
            if moved:
                await self.refresh()
            if busy:
                if busy_until is None:
                    busy_until = now + BUSY_WAIT_S
                await asyncio.sleep(RETRY_WAIT_S)
            todo = again

    async def _send(self, addr, idx: list[int], commands: list, asking: dict) -> tuple[list[int], list]:
        """One write to one master; a call redirected by ASK goes after ASKING."""
        batch, positions = [], []
        for i in idx:
            if i in asking:
                batch.append(("ASKING",))
            positions.append(len(batch))
            batch.append(commands[i])
        link = self._link(addr)
        try:
            got = await link.execute(batch)
        except (rex.ConnectionError, rex.TimeoutError, OSError) as e:
            # That master is gone (a failover?): the map will say who owns its slots.
            self.failures += 1
            self._links.pop(addr, None)
            await link.close()
            try:
                await self.refresh()
            except rex.ConnectionError:
                pass
            return idx, [rex.ConnectionError(f"redis cluster node {addr[0]}:{addr[1]}: {e}")] * len(idx)
        return idx, [got[p] for p in positions]

    async def broadcast(self, command: tuple) -> list:
        """Run *command* on every master (FUNCTION LOAD, SCRIPT LOAD); their replies."""
        await self.refresh()
        masters = self.masters()
        got = await asyncio.gather(*(self._link(addr).execute([command]) for addr in masters))
        return [g[0] for g in got]

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
