"""The Engine: the one API through which the service reads and writes progress trees.

    apply(updates)  validate, then one pipelined round trip: index the trees
                    in their namespaces and run apply_updates.lua (rollup)
    read(key, ...)  the node and its loaded subtree (see read.py)
    delete(key)     detach a subtree atomically, then free it in chunks
    collect_garbage free detached subtrees left by deletes (bounded calls)
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


import msgpack
import orjson
import redis.asyncio as aredis

from .errors import (InvalidUpdate, NotFound, ProgressError, QuotaExceeded, StorageUnavailable, StoredFormatError,
                     redis_errors)
from .keys import RedisKeys, check_key, namespace_chain, relative_key, tree_root
from .limits import Limits
from .cluster import ClusterLink
from .link import RedisLink
from .namespaces import NamespaceIndex
from .read import TreeReader
from .records import FORMAT, decode, keyed_records, now_ms
from .scripts import Scripts, pack, unpack
from .errors import invalid as bad
from .updates import encode_update

_SNAPSHOT_MODES = {"none": 0, "updated": 1, "all": 2}
_U32 = struct.Struct("<I")

APPLIED = "applied"
STALE = "stale"  # ignored: its ts is older than the node's last applied ts


@dataclass(frozen=True)
class Event:
    """An event of the events exchange: a node whose status became finished,
    failed or canceled (kind "completed", written by apply_updates.lua), or a
    lifecycle notice of a job root (started, long-running, stalled,
    recovered: server/lifecycle.py)."""

    id: str  # unique per occurrence: '<key>@<end_time>' (completed), '<key>@<kind>@<ms>' (notices)
    key: str
    status: str
    start_time: int
    end_time: int  # completed: when it ended; a notice: when it was noticed
    run_time: int | None = None  # when it first ran (left waiting); None: never did
    kind: str = "completed"
    progress: float | None = None  # notices: the node's progress and eta then
    eta: int | None = None

    @property
    def duration_ms(self) -> int:
        """How long it ran: from run_time (else its first update) to its end (or
        to the notice).  A step announced with progress 0 long before it
        starts is not counted as running while it waited."""
        return self.end_time - (self.run_time if self.run_time is not None else self.start_time)

    def as_dict(self) -> dict:
        body = {"id": self.id, "event": self.kind, "key": self.key, "status": self.status,
                "start_time": self.start_time, "run_time": self.run_time, "duration_ms": self.duration_ms}
        if self.kind == "completed":
            body["end_time"] = self.end_time
        else:
            body.update(at=self.end_time, progress=self.progress, eta=self.eta)
        return body

    def packed(self) -> bytes:
        """The outbox form (what from_packed reads; apply_updates.lua writes the first five)."""
        return msgpack.packb([self.key, self.status, self.start_time, self.end_time,
                              self.run_time if self.run_time is not None else False,
                              self.kind, self.progress, self.eta], use_bin_type=False)

    @classmethod
    def from_packed(cls, event_id: bytes, packed: bytes) -> "Event":
        key, status, start, end, *rest = msgpack.unpackb(packed, raw=True)
        run = int(rest[0]) if rest and rest[0] is not False else None
        kind, progress, eta = (rest[1].decode(), rest[2], rest[3]) if len(rest) > 3 else ("completed", None, None)
        return cls(event_id.decode(), key.decode(), status.decode(), int(start), int(end), run, kind, progress, eta)


@dataclass
class ApplyResult:
    """What one apply() did.

    results  one entry per input update, in input order: APPLIED, STALE, or
             the InvalidUpdate that refused it
    changed  (key, record) of every node whose state changed (or of those
             asked for), ancestors first within each tree: what live feeds
             publish.  records.decode() turns a record into its JSON object.
    now      the server time (ms) the batch was applied at
    events   completion events of this batch (when asked for)
    """

    results: list
    changed: list[tuple[str, bytes]]
    now: int
    events: list[Event] = field(default_factory=list)

    def node(self, key: str, fragments: bool = False) -> dict | None:
        """The new state of *key* if it changed in this batch."""
        for k, raw in reversed(self.changed):
            if k == key:
                return decode(k, raw, fragments)
        return None


@dataclass
class Plan:
    """A validated batch as apply_updates.lua calls: ``calls[j]`` applies the
    updates at ``positions[j]`` of the batch to the trees ``roots[j]`` (in
    KEYS order); ``results`` already holds the refusals of validation (None
    where the script decides) and ``update_roots`` each update's tree."""

    results: list
    now: int
    mode: int
    update_roots: list
    calls: list = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)
    roots: list[list[str]] = field(default_factory=list)

    def tree_roots(self) -> list[str]:
        return [r for roots in self.roots for r in roots]


@dataclass
class DeleteResult:
    key: str
    changed: list[tuple[str, bytes]] = field(default_factory=list)
    now: int = 0


class Engine:
    """Progress trees in one Redis (a ``redis.asyncio.Redis`` with bytes replies).

    prefix                keeps deployments sharing one Redis apart
    eta_window_ms         time constant of the progress-rate average behind eta
    max_updates_per_call  bounds the work (and the Redis stall) of one script call
    one_tree_per_call     group calls by hash slot, as Redis Cluster needs;
                          a single Redis may take many trees per call
    history_samples       most progress-history samples a node keeps (0: none)
    history_step_ms       the finest step between them (engine/history.py)
    """

    def __init__(
        self,
        redis,
        prefix: str = "progress",
        limits: Limits | None = None,
        eta_window_ms: int = 120_000,
        max_updates_per_call: int = 2000,
        one_tree_per_call: bool = False,
        gc_budget: int = 1000,
        feed: bool = False,
        stall_after_ms: int = 600_000,
        history_samples: int = 64,
        history_step_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.keys = RedisKeys(prefix)
        self.limits = limits or Limits()
        self.eta_window_ms = eta_window_ms
        self.max_updates_per_call = max_updates_per_call
        #: A Redis Cluster (a redis.asyncio.RedisCluster): calls go by hash slot
        #: (engine/cluster.py), so each call holds one tree.
        self.cluster = isinstance(redis, aredis.RedisCluster)
        self.one_tree_per_call = one_tree_per_call or self.cluster
        self.gc_budget = gc_budget
        self.feed = feed
        #: A running node that has not changed for this long is stalled (0: never; engine/records.py).
        self.stall_after_ms = stall_after_ms
        if not (0 <= history_samples <= 65535 and history_step_ms >= 1):
            raise ValueError("history_samples must be 0-65535 and history_step_ms at least 1")
        self.history_samples = history_samples
        self.history_step_ms = history_step_ms
        #: Since when this prefix's trees are sampled under these settings (start()).
        self.history_since_ms = 0
        #: How scripts publish the changes of watched trees: "" (no live feed),
        #: "SPUBLISH" (sharded pub/sub, Redis 7) or "PUBLISH"; set by start().
        self.feed_command = ""
        self.scripts = Scripts()
        self.reader = TreeReader(self)
        self.namespaces = NamespaceIndex(self.keys, speculate=not self.cluster)

    async def start(self) -> None:
        """Load the scripts and check that this prefix's trees are in the record
        format this version writes (raises StoredFormatError if not)."""
        if self.scripts.link is None and type(self.redis) is aredis.Redis:
            self.scripts.link = RedisLink.of(self.redis)
        elif self.scripts.link is None and self.cluster:
            self.scripts.link = ClusterLink(self.redis)
        await self.scripts.load(self.redis)
        await self._check_format()
        await self._note_history_settings()
        if self.feed:
            if self.cluster:
                if not self.scripts.functions:
                    raise StorageUnavailable("live feeds on a Redis Cluster need Redis 7 (sharded pub/sub)")
                self.feed_command = "SPUBLISH"
            else:
                with redis_errors():
                    version = (await self.redis.info("server"))["redis_version"]
                self.feed_command = "SPUBLISH" if int(str(version).split(".")[0]) >= 7 else "PUBLISH"
            self.namespaces.feed_command = self.feed_command

    async def _check_format(self) -> None:
        """'<prefix>:format' names the record format of the prefix's trees.  A
        prefix that has trees but no such key was written by a version before
        it (format 1): those records would be misread, so refuse to start."""
        key = f"{self.keys.prefix}:format"
        with redis_errors():
            stored = await self.redis.get(key)
            if stored is None:
                async for _ in self.redis.scan_iter(match=f"{self.keys.prefix}:{{*}}:t", count=1000):
                    stored = b"1"
                    break
                else:
                    await self.redis.set(key, str(FORMAT), nx=True)
                    return
        if int(stored) != FORMAT:
            raise StoredFormatError(
                f"this Redis holds progress trees under the prefix {self.keys.prefix!r} in record format "
                f"{int(stored)}, which this version (format {FORMAT}) cannot read. Delete them "
                f"(redis-cli --scan --pattern '{self.keys.prefix}:*' | xargs redis-cli del) or use another --prefix.")

    async def _note_history_settings(self) -> None:
        """'<prefix>:history' holds "<samples> <step ms> <since ms>": the
        progress-history settings the prefix's trees are sampled under, and
        since when.  A start with other settings writes its own with since =
        now: a node last sampled before then may hold a history of the old
        grid, which its next sample rewrites whole, resampled (history.lua),
        instead of appending to it."""
        key = f"{self.keys.prefix}:history"
        mine = (self.history_samples, self.history_step_ms)
        with redis_errors():
            stored = await self.redis.get(key)
            parts = stored.split() if stored else []
            if len(parts) == 3 and (int(parts[0]), int(parts[1])) == mine:
                self.history_since_ms = int(parts[2])
                return
            self.history_since_ms = now_ms()
            await self.redis.set(key, f"{mine[0]} {mine[1]} {self.history_since_ms}")

    async def close(self) -> None:
        """Close the engine's own connection (the redis-py client is the caller's)."""
        if self.scripts.link is not None:
            await self.scripts.link.close()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except Exception:  # noqa: BLE001 - any failure: not answering
            return False

    # -- writing -------------------------------------------------------------

    async def apply(self, updates: Iterable[tuple[str, Mapping]], snapshots: str = "all",
                    events: bool = False) -> ApplyResult:
        """Validate and apply a batch of (key, fields), in one round trip.  A
        tree new to this process is listed in its namespaces in that round
        trip (engine/namespaces.py); on a Redis Cluster, or when a batch has
        more than SPECULATE_MAX such trees, the ones it created are listed
        by a second.  Either way a new tree is listed before apply returns.

        Each update is validated on its own: a bad one gets its error in
        ``results`` and the others still apply.  Raises StorageUnavailable
        when Redis cannot be reached (then nothing may have been applied,
        or part of it: updates set values, so the caller can retry).

        ``changed`` holds the records of every changed node (snapshots
        "all", ancestors first within each tree), of the updated nodes only
        ("updated") or of none ("none").

        With *events*, nodes whose status became finished, failed or canceled
        are returned in ``events`` and kept in their tree's outbox until
        ack_events(): an event is not lost if the caller dies before it
        published it (pending_events() finds it again).
        """
        plan = self.plan(updates, snapshots, events)
        results, now = plan.results, plan.now
        if not plan.calls:
            return ApplyResult(results, [], now)
        index = self.namespaces.take_due(now)
        roots = plan.tree_roots()
        listing, listing_roots = self.namespaces.listing_calls(roots, now)
        feed, lookups = self.namespaces.feed_commands(roots, now)
        try:
            replies = await self.scripts.run(self.redis, plan.calls + index + listing + feed)
        except StorageUnavailable:
            self.namespaces.requeue(index)
            raise
        n = len(plan.calls)
        for r in replies:
            if isinstance(r, StorageUnavailable):
                self.namespaces.requeue(index)
                raise r
        m = n + len(index)
        listed = {root for root, r in zip(listing_roots, replies[m:m + len(listing)]) if r == 1}
        self.namespaces.watch_replies(lookups, replies[m + len(listing):])

        changed: list[tuple[str, bytes]] = []
        ended: list[Event] = []
        applied, created = set(), []
        for pos, roots, reply in zip(plan.positions, plan.roots, replies[:n]):
            if isinstance(reply, ProgressError):
                for i in pos:
                    results[i] = reply
                continue
            statuses, flat, evs, new = unpack(reply)
            ended.extend(Event.from_packed(i, e) for i, e in zip(evs[0::2], evs[1::2]))
            for i, st in zip(pos, statuses):
                if st == 1:
                    results[i] = APPLIED
                    applied.add(plan.update_roots[i])
                else:
                    results[i] = STALE if st == 0 else self._refusal(st)
            created.extend(roots[j - 1] for j in new)
            for root, records in zip(roots, flat):
                if records:
                    changed.extend(keyed_records(root, records, sort=plan.mode == 2))
        index_now = self.namespaces.applied(applied, created, now, listed)
        if index_now:
            for r in await self.scripts.run(self.redis, index_now):
                if isinstance(r, ProgressError):
                    self.namespaces.requeue(index_now)
                    raise r
        return ApplyResult(results, changed, now, ended)

    def plan(self, updates: Iterable[tuple[str, Mapping]], snapshots: str = "all",
             events: bool = False) -> "Plan":
        """Validate a batch and build its apply_updates.lua calls, without running them."""
        mode = _SNAPSHOT_MODES[snapshots]
        now = now_ms()
        results: list = []
        update_roots: list = []
        trees: dict[str, list] = {}
        for i, (key, fields) in enumerate(updates):
            try:
                root, enc = encode_update(key, fields, self.limits)
            except InvalidUpdate as e:
                results.append(e)
                update_roots.append(None)
                continue
            results.append(None)
            update_roots.append(root)
            piece = trees.get(root)
            if piece is None:
                trees[root] = [(i, enc)]
            else:
                piece.append((i, enc))
        plan = Plan(results, now, mode, update_roots)
        records = self.keys.records
        u32 = _U32.pack
        for group in self._group(trees):
            keys, packed, pos, roots = [], [], [], []
            for root, piece in group:
                packed.append(u32(len(piece)))
                for i, enc in piece:
                    pos.append(i)
                    packed.append(u32(len(pos)))
                    packed.append(enc)
                keys.append(records(root))
                roots.append(root)
            args = (now, self.eta_window_ms, self.limits.max_fields_per_node, b"".join(packed), int(events),
                    self.feed_command, self.limits.max_nodes_per_tree, mode, self.history_samples,
                    self.history_step_ms, int(self.cluster), self.history_since_ms)
            plan.calls.append(("apply_updates", keys, args))
            plan.positions.append(pos)
            plan.roots.append(roots)
        return plan

    async def ack_events(self, events: Iterable[Event]) -> None:
        """Drop published events from their trees' outboxes."""
        by_tree: dict[str, list[str]] = {}
        for e in events:
            by_tree.setdefault(tree_root(e.key), []).append(e.id)
        if not by_tree:
            return
        with redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for root, ids in by_tree.items():
                    pipe.hdel(self.keys.tree(root) + "out", *ids)
                await pipe.execute()

    async def pending_events(self, min_age_ms: int = 30_000, limit: int = 10_000) -> list[Event]:
        """Events still in outboxes that ended at least *min_age_ms* ago: left
        behind by a process that died before publishing them (SCAN: for a
        periodic sweep, not a hot path)."""
        cutoff = now_ms() - min_age_ms
        found: list[Event] = []
        with redis_errors():
            async for key in self.redis.scan_iter(match=f"{self.keys.prefix}:{{*}}:out", count=1000):
                for event_id, packed in (await self.redis.hgetall(key)).items():
                    event = Event.from_packed(event_id, packed)
                    if event.end_time <= cutoff:
                        found.append(event)
                if len(found) >= limit:
                    break
        return found[:limit]

    def _refusal(self, status: int) -> InvalidUpdate:
        if status == 3:
            return QuotaExceeded(f"the tree is full: a tree may hold at most {self.limits.max_nodes_per_tree} nodes",
                                 code="tree-full")
        return bad("too-many-fields", f"a node may hold at most {self.limits.max_fields_per_node} fields")

    def _group(self, trees: dict[str, list]) -> list[list[tuple[str, list]]]:
        """The script calls: (tree root, its updates) pieces of at most
        max_updates_per_call updates a call, whole trees where they fit (one tree
        per call with one_tree_per_call).  A larger tree is split over several
        calls; they run in order, so its updates still apply as if one by one."""
        size, limit = self.max_updates_per_call, self.max_updates_per_call
        groups: list[list[tuple[str, list]]] = []
        for root, ups in trees.items():
            for i in range(0, len(ups), limit):
                piece = ups[i:i + limit]
                if self.one_tree_per_call or not groups or size + len(piece) > limit:
                    groups.append([])
                    size = 0
                groups[-1].append((root, piece))
                size += len(piece)
        return groups

    async def flush_index(self) -> None:
        """Write the recency index of trees whose refresh is due (the service
        calls this every second, so an idle service leaves none waiting)."""
        calls = self.namespaces.take_due(now_ms())
        if not calls:
            return
        try:
            replies = await self.scripts.run(self.redis, calls)
        except StorageUnavailable:
            self.namespaces.requeue(calls)
            raise
        for r in replies:
            if isinstance(r, ProgressError):
                self.namespaces.requeue(calls)
                raise r

    async def delete(self, key: str, snapshots: bool = True, not_after: int | None = None) -> DeleteResult | None:
        """Detach *key* and its subtree atomically; free its storage afterwards.

        ``changed`` holds the ancestors' new snapshots unless *snapshots* is
        False.  With *not_after* (ms), the node is deleted only if its
        update_time is not later, else None is returned (it was written
        since).  Raises NotFound when there is no such node.  Namespaces
        cannot be deleted.
        """
        root = tree_root(check_key(key)) if key else None
        if root is None:
            raise bad("namespace-key", f"{key!r} is a namespace; delete the trees under it one by one")
        now = now_ms()
        with redis_errors():
            # Registered first: if anything fails after the script detached the
            # subtree, the collector still knows the tree has garbage.
            await self.redis.sadd(self.keys.gc_trees, root)
        (reply,) = await self.scripts.run(
            self.redis,
            [("delete_subtree", [self.keys.records(root)],
              [now, self.eta_window_ms, relative_key(key, root), int(snapshots), self.feed_command,
               "" if not_after is None else not_after, self.history_samples, self.history_step_ms,
               int(self.cluster), self.history_since_ms])])
        if isinstance(reply, ProgressError):
            raise reply
        found, flat = unpack(reply)
        if not found:
            await self._drop_gc_mark(root)
            raise NotFound(f"no node {key!r}")
        if found == 2:
            return None
        if key == root:
            await self.unlist_tree(root, now)
        return DeleteResult(key, keyed_records(root, flat, sort=True), now)

    async def _drop_gc_mark(self, root: str) -> None:
        """Undo delete()'s registration of *root* for garbage collection when it
        has no garbage (a delete of nothing): keep the set of such trees exact."""
        gc = self.keys.tree(root) + "gc"
        with redis_errors():
            if not await self.redis.llen(gc):
                await self.redis.srem(self.keys.gc_trees, root)
                if await self.redis.llen(gc):  # a delete queued some meanwhile
                    await self.redis.sadd(self.keys.gc_trees, root)

    async def unlist_tree(self, root: str, now: int | None = None) -> None:
        """Remove a (deleted) tree from its namespace, and namespaces left empty
        from theirs; a watched namespace's feed hears of each removal.

        A write may bring the tree (or a tree of an emptied namespace) back
        between the delete and this: each removal is followed by a look at
        what was removed, and whatever exists again is listed again.  (Its
        writer lists it too, after creating it: whichever comes last, the
        listing ends up agreeing with the trees that exist.)"""
        now = now or now_ms()
        self.namespaces.forget(root)
        for ns, child in namespace_chain(root):
            base = self.keys.ns_base(ns)
            with redis_errors():
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.zrem(self.keys.ns(ns), child)
                    pipe.zrem(self.keys.ns_recent(ns), child)
                    pipe.zcard(self.keys.ns(ns))
                    pipe.exists(base + "w")
                    _, _, left, watched = await pipe.execute()
                if watched and self.feed_command:
                    await self.redis.execute_command(self.feed_command, base + "f", pack([now, [], child]))
                if child == root:
                    back = await self.redis.hexists(self.keys.records(root), "")
                else:
                    back = await self.redis.zcard(self.keys.ns(child)) > 0
            if back:
                for reply in await self.scripts.run(self.redis, self.namespaces.calls([root], now_ms())):
                    if isinstance(reply, ProgressError):
                        raise reply
                return
            if left or ns == "":
                return

    async def collect_garbage(self, root: str | None = None) -> int:
        """Free detached subtrees (of *root*, or of every tree that has some)
        until none is left, one bounded script call at a time.  Returns the
        number of calls made."""
        with redis_errors():
            roots = [root] if root else [r.decode() for r in await self.redis.smembers(self.keys.gc_trees)]
        calls = 0
        for r in roots:
            while True:
                (left,) = await self.scripts.run(
                    self.redis, [("collect_garbage", [self.keys.records(r)], [self.gc_budget])])
                if isinstance(left, ProgressError):
                    raise left
                calls += 1
                if left == 0:
                    break
            # A delete may queue more garbage between the last call and SREM:
            # put the tree back when it did.
            with redis_errors():
                await self.redis.srem(self.keys.gc_trees, r)
                if await self.redis.llen(self.keys.tree(r) + "gc"):
                    await self.redis.sadd(self.keys.gc_trees, r)
        return calls

    # -- reading -------------------------------------------------------------

    async def read(self, key: str, depth: int = 1, limit: int | None = None,
                   cursor: str | None = None, order: str = "first", status: str | None = None,
                   history: bool = False) -> dict:
        """The node *key* (or namespace) with *depth* levels loaded, its
        children only those in *status* when given, every tree node with its
        progress history (``_history``, history.py) when *history*; see read.py."""
        return await self.reader.read(key, depth, limit, cursor, order, status=status, history=history)

    async def read_many(self, keys: list[str]) -> list[dict]:
        """The nodes (depth 1) of many trees' keys in one round trip; missing ones are left out."""
        return await self.reader.read_many(keys)

    async def read_json(self, key: str, depth: int = 1, limit: int | None = None,
                        cursor: str | None = None, order: str = "first", more: dict | None = None,
                        status: str | None = None, history: bool = False) -> bytes:
        """read() serialized, without parsing client-field values on the way;
        *more* adds top-level fields (such as the server time)."""
        node = await self.reader.read(key, depth, limit, cursor, order, fragments=True, status=status,
                                      history=history)
        if more:
            node.update(more)
        return orjson.dumps(node)


