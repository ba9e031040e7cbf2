"""Retention: purge trees nobody has updated for a long time.

Every ``--retention-interval`` seconds the sweep walks the namespaces'
recency indexes (trees by last update) from the top namespace down.  A tree
whose last update is older than ``--retention-days`` (``--retention-finished-days``
when its root's status is finished) is deleted like ``DELETE /status/<root>``:
detached atomically (a reader never sees it half purged), unlisted from its
namespace, then freed in bounded chunks by the garbage collector.  The delete
re-checks the update time inside Redis, so a tree written while the sweep
runs stays.  Each sweep handles at most SWEEP_BATCH trees; the next one
continues.
"""
from __future__ import annotations

import asyncio
import logging

from sca_progress.engine import NotFound, is_namespace, now_ms

log = logging.getLogger("sca_progress.retention")

SWEEP_BATCH = 1000
DAY_MS = 86_400_000


class Retention:
    def __init__(self, service) -> None:
        self.service = service
        self.engine = service.engine
        s = service.settings
        self.max_age_ms = int(s.retention_days * DAY_MS)
        self.finished_age_ms = int(s.retention_finished_days * DAY_MS)
        self.interval = s.retention_interval
        self.purged = 0

    @property
    def enabled(self) -> bool:
        return self.max_age_ms > 0 or self.finished_age_ms > 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as e:  # noqa: BLE001 - keep sweeping
                log.warning("retention sweep failed: %r", e)

    async def sweep(self) -> int:
        """One bounded pass; returns how many trees it purged."""
        now = now_ms()
        ages = [a for a in (self.max_age_ms, self.finished_age_ms) if a > 0]
        oldest_kept = now - min(ages)  # candidates: not updated since
        purged, budget = 0, SWEEP_BATCH
        stack = [""]
        keys = self.engine.keys
        redis = self.engine.redis
        while stack and budget > 0:
            ns = stack.pop()
            # Inner namespaces are walked whatever their age (their members' keys
            # end in a segment starting with '_'); trees only when old enough.
            pattern = f"{ns}._*" if ns else "_*"
            async for child, _ in redis.zscan_iter(keys.ns(ns), match=pattern, count=1000):
                if is_namespace(child.decode()):
                    stack.append(child.decode())
            old = await redis.zrangebyscore(keys.ns_recent(ns), "-inf", oldest_kept, start=0, num=budget)
            roots = [r.decode() for r in old if not is_namespace(r.decode())]
            budget -= len(roots)
            nodes = {n["key"]: n for n in await self.engine.read_many(roots)}
            for root in roots:
                node = nodes.get(root)
                if node is None:  # listed but gone (a crash between delete and unlisting)
                    await self._unlist(ns, root)
                    continue
                age = self.finished_age_ms if node.get("status") == "finished" and self.finished_age_ms else self.max_age_ms
                if age <= 0 or node["update_time"] > now - age:
                    continue
                try:
                    if await self.service.delete(root, not_after=now - age) is not None:
                        purged += 1
                except NotFound:
                    await self._unlist(ns, root)
        if purged:
            log.info("retention purged %d trees", purged)
        self.purged += purged
        return purged

    async def _unlist(self, ns: str, root: str) -> None:
        keys = self.engine.keys
        async with self.engine.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.ns(ns), root)
            pipe.zrem(keys.ns_recent(ns), root)
            await pipe.execute()
