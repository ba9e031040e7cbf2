"""Lifecycle notices of job roots: started, long-running, stalled, recovered.

Completion events are written by the scripts, per node, as a status enters
finished, failed or canceled.  The notices here are about time passing, which
no update announces, so a sweep looks for them every --lifecycle-interval
seconds, for tree roots (the jobs: ``_portal.job123``), never for every node:

    started       the job ran (left waiting) for the first time; at: run_time
    long-running  the job is still unfinished --long-running-after seconds
                  after it started; again every --long-running-every seconds
                  (0: never again).  at: when it was due; a notice missed
                  (the job was stalled, or nothing swept) comes at once, and
                  the next one --long-running-every after it
    stalled       the job is stalled (engine/records.py: unchanged for
                  --stall-after, or well past its eta); at: since when
    recovered     a stalled job changed again; at: its latest change.  A
                  stalled job that ends (or reaches progress 1) gets no
                  'recovered', and no more 'long-running'.

Each notice is sent once per occurrence: what was noticed is kept with the
tree (``P:{R}:lc``, a hash: born, started, long, stalled), and a notice goes
through the tree's outbox like a completion event, so it survives a crash
between Redis and the broker (at least once; the id, '<key>@<kind>@<at>', is
the AMQP message id, and its type is the kind).  'born' is the root's
start_time: state kept for an earlier tree of the same key (deleted, then
posted again) is dropped, and collect_garbage.lua deletes it with the tree.

What one sweep examines is bounded by the jobs that are active: the trees
updated within --stall-after (started, long-running, overdue, recovered), and
those that crossed the --stall-after line since the last sweep (stalled),
both reaching back by the namespace recency index's lag (5 s).
One process sweeps at a time (a lock key in Redis).
"""
from __future__ import annotations

import asyncio
import logging
import os

import orjson

from sca_progress.engine import Event, now_ms
from sca_progress.engine.keys import is_namespace

from sca_progress.engine.scripts import pack

from .retention import all_namespaces

log = logging.getLogger("sca_progress.lifecycle")

#: Trees read per round trip.
PAGE = 500
#: After a pause (a restart), trees that crossed the stall line up to this long
#: ago still get their stalled notice.
CATCH_UP_MS = 24 * 3600 * 1000


class Lifecycle:
    def __init__(self, service) -> None:
        s = service.settings
        self.service = service
        self.engine = service.engine
        self.stall_ms = int(s.stall_after * 1000)
        self.long_ms = int(s.long_running_after * 1000)
        self.every_ms = int(s.long_running_every * 1000)  # 0: no notice after the first
        self.interval = s.lifecycle_interval
        #: A long-running notice found later than this after it was due was
        #: missed (not just waiting for a sweep): it comes now, and the next
        #: one every_ms after it, not every_ms after its missed time.
        self.late_ms = int(2 * s.lifecycle_interval * 1000)
        self.noticed = 0

    @property
    def enabled(self) -> bool:
        return self.service.events_enabled and self.interval > 0

    async def run(self) -> None:
        while not self.service.closing:
            await asyncio.sleep(self.interval)
            try:
                events = await self.sweep()
                if events:
                    await self.service.publish_events(events)
            except Exception as e:  # noqa: BLE001 - keep sweeping
                log.warning("lifecycle sweep failed: %r", e)

    async def sweep(self, now: int | None = None) -> list[Event]:
        """One pass: the notices due, written to their trees' outboxes (the caller publishes them)."""
        now = now or now_ms()
        redis, keys = self.engine.redis, self.engine.keys
        lock = f"{keys.prefix}:lifecycle"
        if not await redis.set(lock, str(os.getpid()), nx=True, px=max(1, int(self.interval * 800))):
            return []  # another process sweeps this round
        last = await redis.getset(f"{lock}:at", str(now))
        last = int(last) if last else now - CATCH_UP_MS
        active_since = now - self.stall_ms if self.stall_ms else now - CATCH_UP_MS
        # The recency index lags a tree's updates by up to its refresh period
        # (engine/namespaces.py): reach back that much further.
        lag = self.engine.namespaces.refresh_ms + int(self.interval * 2000)
        crossed_since = max(min(last, now) - self.stall_ms - lag, now - CATCH_UP_MS - self.stall_ms)
        events: list[Event] = []
        for ns in await all_namespaces(self.engine):
            roots = [m.decode() for m in await redis.zrangebyscore(keys.ns_recent(ns), crossed_since, "+inf")]
            roots = [r for r in roots if not is_namespace(r)]
            for i in range(0, len(roots), PAGE):
                events.extend(await self._examine(roots[i:i + PAGE], now, active_since))
        self.noticed += len(events)
        return events

    async def _examine(self, roots: list[str], now: int, active_since: int) -> list[Event]:
        redis, keys = self.engine.redis, self.engine.keys
        nodes = {n["key"]: n for n in await self.engine.read_many(roots)}
        async with redis.pipeline(transaction=False) as pipe:
            for root in roots:
                pipe.hgetall(keys.tree(root) + "lc")
            states = await pipe.execute()
        # root, event (None: only the state changes), fields to set, fields to drop
        due: list[tuple[str, Event | None, dict, list]] = []
        for root, state in zip(roots, states):
            node = nodes.get(root)
            if node is None:
                continue
            state = {k.decode(): int(v) for k, v in state.items()}
            born = node["start_time"]
            if state.get("born") != born:  # new, or kept for an earlier tree of this key
                due.append((root, None, {"born": born}, [k for k in state if k != "born"]))
                state = {}
            for event, sets, drops in self._notices(node, state, now, active_since):
                due.append((root, event, sets, drops))
        if not due:
            return []
        events = [(root, event) for root, event, _, _ in due if event is not None]
        async with redis.pipeline(transaction=False) as pipe:
            for root, event in events:  # the outbox first: a crash between the two repeats a notice, loses none
                pipe.hset(keys.tree(root) + "out", event.id, event.packed())
            for root, event, sets, drops in due:
                if drops:
                    pipe.hdel(keys.tree(root) + "lc", *drops)
                if sets:
                    pipe.hset(keys.tree(root) + "lc", mapping=sets)
            await pipe.execute()
        await self._to_feeds(events)
        return [event for _, event in events]

    async def _to_feeds(self, due: list) -> None:
        """Each notice also goes to the live feed of its tree, when watched
        (SSE and socket.io subscribers get a 'notice' event: server/feed.py)."""
        command = self.engine.feed_command
        if not command:
            return
        redis, keys = self.engine.redis, self.engine.keys
        async with redis.pipeline(transaction=False) as pipe:
            for root, _ in due:
                pipe.exists(keys.tree(root) + "w")
            watched = await pipe.execute()
        for (root, event), on in zip(due, watched):
            if on:
                await redis.execute_command(command, keys.tree(root) + "f",
                                            pack([event.end_time, [], False, orjson.dumps(event.as_dict())]))

    def _notices(self, node: dict, state: dict, now: int, active_since: int):
        """(event or None, lc fields to set, lc fields to drop) due for one job root."""
        key, run, upd = node["key"], node.get("run_time"), node["update_time"]
        # Ended (a terminal status), or all done though no status says so.
        ended = "end_time" in node or node.get("progress", 0) >= 1

        def notice(kind: str, at: int) -> Event:
            return Event(f"{key}@{kind}@{at}", key, node.get("status", ""), node["start_time"], at, run, kind,
                         node.get("progress"), node.get("eta"))

        if run is not None and "started" not in state:
            yield notice("started", run), {"started": run}, []
        since, was = node.get("_stalled_since"), state.get("stalled")
        if was is None:
            if since is not None:
                yield notice("stalled", since), {"stalled": since}, []
        elif since != was:
            # A stall by silence ends with a change; one by lateness (past the
            # eta) only once the node is no longer late: while late, its
            # 'since' moves with each change of its eta, and it is the same stall.
            if since is None or (since - upd == self.stall_ms and upd >= was):
                if ended:
                    yield None, {}, ["stalled"]  # its completion event says the rest
                else:
                    yield notice("recovered", upd), {}, ["stalled"]
                    if since is not None:  # and stalled again since (between two sweeps)
                        yield notice("stalled", since), {"stalled": since}, []
            else:
                yield None, {"stalled": since}, []
        if self.long_ms and run is not None and not ended and upd >= active_since:
            last = state.get("long")
            if last is None:
                due = run + self.long_ms
            elif self.every_ms:
                due = last + self.every_ms
            else:
                due = None  # --long-running-every 0: the first notice only
            if due is not None and now >= due:
                if now - due > self.late_ms:
                    due = now
                yield notice("long-running", due), {"long": due}, []
