"""Reading a node and its subtree, one round trip per level.

The answer is the node's JSON object with, on every parent:

    _children        full keys of its children (one page, first-seen order)
    _children_total  how many children it has
    _children_next   opaque cursor of the next page (absent on the last page)
    tasks            the loaded children (same order) while depth allows

With ``status``, the node's own children are only those in that status
(``none``: without one), still in first-seen order: ``_children_total``
counts them and ``_children_status`` names the status.  A wide parent keeps
an index of its children by status (lua/include/children.lua), so a page
costs the same whether it has 100 children or 100,000.  Deeper levels are
not filtered.

``depth=1`` is the node alone; each further level loads the listed children
of the level above, in one pipelined round trip of read_nodes.lua calls of
at most READ_CHUNK nodes each, so no single call holds Redis for long.

Namespaces (keys made of ``_`` segments, and the top namespace "") answer
with their trees (or inner namespaces) as children, by first-seen order or,
with ``order="recent"``, most recently updated first.

A subtree deleted between two levels is never shown half-freed: read_nodes
reports a parent that vanished, and the whole read starts over.

The scripts return each node's stored record; records.decode builds its
JSON object (``read_json`` keeps client-field values as unparsed fragments
and serializes the whole answer once: the path REST uses).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import NotFound, ProgressError, StorageUnavailable
from .errors import invalid as bad
from .errors import redis_errors
from . import history as histories
from .keys import TOP, check_key, is_namespace, relative_key, tree_root
from .records import decode, now_ms
from .scripts import pack, unpack

#: Most nodes read by one read_nodes.lua call.
READ_CHUNK = 1000
#: How often a read starts over when a subtree is deleted under it.
READ_ATTEMPTS = 3


@dataclass
class _Loaded:
    """A node of the answer (its JSON object) and what is needed to load its children."""

    key: str
    node: dict
    root: str | None = None  # tree root, None for a namespace
    id: bytes = b""
    children: list[str] = field(default_factory=list)  # keys of the listed page


class _Vanished(Exception):
    """A parent was deleted between two levels of one read."""


class TreeReader:
    def __init__(self, engine) -> None:
        self.engine = engine

    def clock(self) -> tuple:
        return now_ms(), self.engine.eta_window_ms, self.engine.stall_after_ms

    async def read(self, key: str, depth: int = 1, limit: int | None = None,
                   cursor: str | None = None, order: str = "first", fragments: bool = False,
                   status: str | None = None, history: bool = False) -> dict:
        lim = self.engine.limits
        if key != TOP:
            check_key(key)
        if type(depth) is not int or not 1 <= depth <= lim.max_read_depth:
            raise bad("bad-depth", f"depth must be an integer from 1 to {lim.max_read_depth}")
        if limit is None:
            limit = lim.default_children_limit
        if type(limit) is not int or not 1 <= limit <= lim.max_children_limit:
            raise bad("bad-limit", f"limit must be an integer from 1 to {lim.max_children_limit}")
        if order not in ("first", "recent"):
            raise bad("bad-order", "order must be 'first' or 'recent'")
        if order == "recent" and not is_namespace(key):
            raise bad("bad-order", "order=recent applies to namespaces only")
        cursor = _check_cursor(cursor, order)
        if status is not None:
            check_status_filter(status, lim)
            if is_namespace(key):
                raise bad("bad-status", "status lists the children of a tree node; a namespace's trees "
                                        "are not indexed by status")
        for attempt in range(READ_ATTEMPTS):
            try:
                return await self._read(key, depth, limit, cursor, order, fragments, status or "", history)
            except _Vanished:
                if attempt == READ_ATTEMPTS - 1:
                    raise StorageUnavailable("the tree kept changing under the read; try again") from None
        raise AssertionError("unreachable")

    async def read_many(self, keys: list[str]) -> list[dict]:
        """Depth-1 nodes of *keys* (tree nodes or namespaces) in one round trip of reads."""
        lim = self.engine.limits.default_children_limit
        trees = [k for k in keys if not is_namespace(k)]
        replies = await self._run([(tree_root(k), ("k", relative_key(k, tree_root(k)))) for k in trees], lim, "")
        out = [_loaded(r, k, tree_root(k), False, self.clock()).node for k, r in zip(trees, replies) if r is not False]
        spaces = await self._namespaces([k for k in keys if is_namespace(k)], lim, "", "first")
        return out + [x.node for x in spaces if x is not None]

    async def _read(self, key, depth, limit, cursor, order, fragments, status, history=False) -> dict:
        lim = self.engine.limits
        if is_namespace(key):
            top = (await self._namespaces([key], limit, cursor, order))[0]
            if top is None:
                raise NotFound(f"no namespace {key!r}")
        else:
            root = tree_root(key)
            rec = (await self._run([(root, ("k", relative_key(key, root)))], limit, cursor,
                                   lim.max_read_child_keys, status))[0]
            if rec is False:
                raise NotFound(f"no node {key!r}")
            top = _loaded(rec, key, tree_root(key), fragments, self.clock())
            if status:  # said even when none is in that status
                top.node.setdefault("_children", [])
                top.node.setdefault("_children_total", 0)
                top.node["_children_status"] = status
        frontier = [top]
        everyone = [top] if history else None
        loaded, listed = 1, len(top.children)
        for _ in range(depth - 1):
            wanted = sum(len(x.children) for x in frontier)
            if not wanted:
                break
            if loaded + wanted > lim.max_read_nodes:
                raise bad("too-many-nodes", f"the answer would hold more than {lim.max_read_nodes} "
                                             f"nodes; ask for a smaller depth or limit")
            frontier = await self._next_level(frontier, limit, fragments, lim.max_read_child_keys - listed)
            if history:
                everyone.extend(frontier)
            loaded += len(frontier)
            listed += sum(len(x.children) for x in frontier)
            if listed > lim.max_read_child_keys:
                raise bad("too-many-nodes", f"the answer would list more than {lim.max_read_child_keys} "
                                             f"child keys; ask for a smaller depth or limit")
        if history:
            with redis_errors():
                await histories.attach(self.engine, everyone)
        return top.node

    async def _next_level(self, frontier: list[_Loaded], limit: int, fragments: bool,
                          key_budget: int) -> list[_Loaded]:
        """Load the listed children of every node of *frontier*; attach them as tasks."""
        requests, owners, namespaces = [], [], []
        for parent in frontier:
            if parent.root is not None:  # children of a tree node, by segment
                cut = len(parent.key) + 1
                for s in range(0, len(parent.children), READ_CHUNK):
                    keys = parent.children[s:s + READ_CHUNK]
                    requests.append((parent.root, ("c", relative_key(parent.key, parent.root), parent.id,
                                                   *[k[cut:] for k in keys])))
                    owners.append((parent, keys))
                continue
            for child in parent.children:  # trees and namespaces under a namespace
                if is_namespace(child):
                    namespaces.append((parent, child))
                else:
                    requests.append((child, ("k", "")))
                    owners.append((parent, [child]))
        replies = await self._run(requests, limit, "", key_budget)
        clock = self.clock()
        got: dict[str, _Loaded] = {}
        for (parent, keys), reply in zip(owners, replies):
            if parent.root is None:
                if reply is not False:  # a tree deleted since the listing is left out
                    got[keys[0]] = _loaded(reply, keys[0], keys[0], fragments, clock)
                continue
            if reply is False:
                raise _Vanished()
            for child, rec in zip(keys, reply):
                if rec is not False:
                    got[child] = _loaded(rec, child, parent.root, fragments, clock)
        ns_loaded = await self._namespaces([c for _, c in namespaces], limit, "", "first")
        for (_, child), x in zip(namespaces, ns_loaded):
            if x is not None:
                got[child] = x
        nxt = []
        for parent in frontier:
            if parent.children:
                kids = [got[c] for c in parent.children if c in got]
                parent.node["tasks"] = [k.node for k in kids]
                stalled = sum(1 for k in kids if "_stalled" in k.node)
                if stalled:
                    parent.node["_stalled_count"] = stalled
                nxt.extend(kids)
        return nxt

    async def _run(self, requests: list[tuple[str, tuple]], limit: int, cursor: str,
                   key_budget: int | str = "", status: str = "") -> list:
        """Run read requests [(tree root, request)] in one round trip of
        read_nodes.lua calls; return each request's reply.  No call lists more
        than *key_budget* child keys (the script refuses past it, before the
        answer grows).  *cursor* and *status* apply to the first request."""
        engine = self.engine
        calls = []
        i = 0
        while i < len(requests):
            roots: dict[str, int] = {}
            batch, cost = [], 0
            while i < len(requests) and (not batch or cost < READ_CHUNK):
                root, req = requests[i]
                if engine.one_tree_per_call and roots and root not in roots:
                    break
                idx = roots.setdefault(root, len(roots) + 1)
                batch.append([req[0], idx, *req[1:]])
                cost += max(1, len(req) - 3)
                i += 1
            keys = [engine.keys.records(r) for r in roots]
            first = not calls
            calls.append(("read_nodes", keys, [limit, cursor if first else "", pack(batch), key_budget,
                                               status if first else ""]))
        replies = await engine.scripts.run(engine.redis, calls) if calls else []
        out = []
        for reply in replies:
            if isinstance(reply, ProgressError):
                if reply.code == "too-many-nodes":
                    raise bad("too-many-nodes", f"the answer would list more than "
                                                f"{self.engine.limits.max_read_child_keys} child keys; "
                                                f"ask for a smaller depth or limit")
                raise reply
            out.extend(unpack(reply))
        return out

    async def _namespaces(self, names: list[str], limit: int, cursor: str, order: str) -> list:
        """Namespace nodes listing a page of their children (None: empty namespace)."""
        if not names:
            return []
        keys = self.engine.keys
        with redis_errors():
            async with self.engine.redis.pipeline(transaction=False) as pipe:
                for ns in names:
                    if order == "recent":
                        score, _, skip = cursor.partition(":")
                        pipe.zrevrangebyscore(keys.ns_recent(ns), score or "+inf", "-inf",
                                              start=int(skip or 0), num=limit + 1, withscores=True)
                    else:
                        pipe.zrangebyscore(keys.ns(ns), f"({cursor}" if cursor else "-inf", "+inf",
                                           start=0, num=limit + 1, withscores=True)
                    pipe.zcard(keys.ns(ns))
                replies = await pipe.execute()
        out = []
        for j, ns in enumerate(names):
            page, total = replies[2 * j], replies[2 * j + 1]
            if not total and ns != TOP:
                out.append(None)
                continue
            children = [m.decode() for m, _ in page[:limit]]
            node = {"key": ns, "namespace": True, "_children": children, "_children_total": total}
            if len(page) > limit:
                node["_children_next"] = _next_cursor(page[:limit], cursor, order)
            out.append(_Loaded(ns, node, None, children=children))
        return out



def _loaded(rep: list, key: str, root: str, fragments: bool, clock: tuple) -> _Loaded:
    """A read_nodes reply as a node of the answer; *clock* is (now, eta time
    constant) in ms, for the eta of nodes that stalled (records.eta_of)."""
    node = decode(key, rep[0], fragments, *clock)
    if not rep[2]:
        return _Loaded(key, node, root, rep[1])
    children = [f"{key}.{seg.decode()}" for seg in rep[4:]]
    node["_children"] = children
    node["_children_total"] = int(rep[2])
    if rep[3]:
        node["_children_next"] = rep[3].decode()
    return _Loaded(key, node, root, rep[1], children)


#: What a cursor looks like: a position or score, and for order=recent how many
#: entries of that score were already returned.
CURSOR_PATTERN = r"[0-9]{1,20}(:[0-9]{1,10})?"
_CURSOR = re.compile(CURSOR_PATTERN)


def check_status_filter(status, limits) -> None:
    """Refuse a status to filter by (status=S) that no node can have: 1 to
    max_status_chars characters, 'none' for nodes without a status."""
    if type(status) is not str or not 0 < len(status) <= limits.max_status_chars:
        raise bad("bad-status", f"status must be 1-{limits.max_status_chars} characters "
                                f"('none' for nodes without a status)")


def _check_cursor(cursor: str | None, order: str) -> str:
    """The cursor to resume from. Either form is accepted in either order: in
    first-seen order positions are unique, so a skip count is ignored; in
    recent order a bare score skips nothing."""
    if not cursor:
        return ""
    if not _CURSOR.fullmatch(cursor):
        raise bad("bad-cursor", "cursor must be a value returned in _children_next")
    return cursor.partition(":")[0] if order == "first" else cursor


def _next_cursor(page: list, cursor: str, order: str) -> str:
    last = page[-1][1]
    if order != "recent":
        return str(int(last))
    # Recency scores are not unique: resume at the last score, skipping the
    # entries with that score already returned.
    same = sum(1 for _, s in page if s == last)
    score, _, skip = cursor.partition(":")
    if score and float(score) == last:
        same += int(skip)
    return f"{int(last)}:{same}"
