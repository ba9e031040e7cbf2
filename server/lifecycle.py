"""Lifecycle notices of job roots: started, long-running, stalled, recovered.

Completion events are written by the scripts, per node, as a status enters
finished, failed or canceled.  The notices here are about time passing, which
no update announces, so a sweep looks for them every --lifecycle-interval
seconds, for tree roots (the jobs: ``_portal.job123``), never for every node:

    started       the job ran (left waiting) for the first time
    long-running  the job is still unfinished --long-running-after seconds
                  after it started; again every --long-running-every seconds
    stalled       the job is stalled (engine/records.py: running, unchanged
                  for --stall-after, or well past its eta)
    recovered     a stalled job changed again

Each notice is sent once per occurrence: what was noticed is kept with the
tree (``P:{R}:lc``, a hash: started, long, stalled), and a notice goes through
the tree's outbox like a completion event, so it survives a crash between
Redis and the broker (at least once; the id, '<key>@<kind>@<ms>', is the AMQP
message id, and its type is the kind).

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
        self.every_ms = max(1, int(s.long_running_every * 1000))
        self.interval = s.lifecycle_interval
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
        due: list[tuple[str, Event, dict, list]] = []  # root, event, fields to set, fields to drop
        for root, state in zip(roots, states):
            node = nodes.get(root)
            if node is None:
                continue
            state = {k.decode(): int(v) for k, v in state.items()}
            for event, sets, drops in self._notices(node, state, now, active_since):
                due.append((root, event, sets, drops))
        if not due:
            return []
        async with redis.pipeline(transaction=False) as pipe:
            for root, event, sets, drops in due:  # the outbox first: a crash between the two repeats a notice, loses none
                pipe.hset(keys.tree(root) + "out", event.id, event.packed())
            for root, event, sets, drops in due:
                if sets:
                    pipe.hset(keys.tree(root) + "lc", mapping=sets)
                if drops:
                    pipe.hdel(keys.tree(root) + "lc", *drops)
            await pipe.execute()
        await self._to_feeds(due)
        return [event for _, event, _, _ in due]

    async def _to_feeds(self, due: list) -> None:
        """Each notice also goes to the live feed of its tree, when watched
        (SSE and socket.io subscribers get a 'notice' event: server/feed.py)."""
        command = self.engine.feed_command
        if not command:
            return
        redis, keys = self.engine.redis, self.engine.keys
        async with redis.pipeline(transaction=False) as pipe:
            for root, _, _, _ in due:
                pipe.exists(keys.tree(root) + "w")
            watched = await pipe.execute()
        for (root, event, _, _), on in zip(due, watched):
            if on:
                await redis.execute_command(command, keys.tree(root) + "f",
                                            pack([event.end_time, [], False, orjson.dumps(event.as_dict())]))

    def _notices(self, node: dict, state: dict, now: int, active_since: int):
        """(event, lc fields to set, lc fields to drop) due for one job root."""
        key, run = node["key"], node.get("run_time")
        ended = "end_time" in node

        def notice(kind: str, at: int) -> Event:
            return Event(f"{key}@{kind}@{at}", key, node.get("status", ""), node["start_time"], now, run, kind,
                         node.get("progress"), node.get("eta"))

        if run is not None and "started" not in state:
            yield notice("started", run), {"started": run}, []
        since = node.get("_stalled_since")
        if "stalled" in state and since != state["stalled"]:
            if since is None:  # it changed (or ended) since it stalled
                yield notice("recovered", node["update_time"]), {}, ["stalled"]
            else:  # stalled again, later
                yield notice("stalled", since), {"stalled": since}, []
        elif since is not None and "stalled" not in state:
            yield notice("stalled", since), {"stalled": since}, []
        if self.long_ms and run is not None and not ended and node["update_time"] >= active_since:
            first = run + self.long_ms
            if now >= first:
                slot = first + (now - first) // self.every_ms * self.every_ms  # the notice due last
                if state.get("long", 0) < slot:
                    yield notice("long-running", slot), {"long": slot}, []
