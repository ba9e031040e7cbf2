"""Retention: purge trees nobody has updated for a long time.

Every ``--retention-interval`` seconds the sweep walks the namespaces'
recency indexes (trees by last update) from the top namespace down.  A tree
whose last update is older than ``--retention-days`` (``--retention-finished-days``
when its root's status is finished) is deleted like ``DELETE /status/<root>``:
detached atomically (a reader never sees it half purged), unlisted from its
namespace, then freed in bounded chunks by the garbage collector.  The delete
re-checks the update time inside Redis, so a tree written while the sweep
runs stays.  Each sweep purges at most SWEEP_BATCH trees and looks at most
at SWEEP_EXAMINE; the next one continues, starting at another namespace.
"""
from __future__ import annotations

import asyncio
import logging

from sca_progress.engine import NotFound, is_namespace, now_ms

log = logging.getLogger("sca_progress.retention")

SWEEP_BATCH = 1000  # most trees purged per pass
SWEEP_EXAMINE = 20_000  # most candidates looked at per pass
PAGE = 500
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
        self._rotation = 0

    @property
    def enabled(self) -> bool:
        return self.max_age_ms > 0 or self.finished_age_ms > 0

    async def run(self) -> None:
        while not self.service.closing:
            await asyncio.sleep(self.interval)
            try:
                await self.sweep()
            except Exception as e:  # noqa: BLE001 - keep sweeping
                log.warning("retention sweep failed: %r", e)

    async def sweep(self) -> int:
        """One bounded pass; returns how many trees it purged.

        Each namespace's recency index is paged through (oldest first) up to
        the cutoff, so young-but-unfinished trees never hide older ones
        behind them; at most SWEEP_BATCH trees are purged and SWEEP_EXAMINE
        examined per pass, and each pass starts at a different namespace.
        """
        now = now_ms()
        ages = [a for a in (self.max_age_ms, self.finished_age_ms) if a > 0]
        oldest_kept = now - min(ages)  # candidates: not updated since
        keys = self.engine.keys
        redis = self.engine.redis
        namespaces = await all_namespaces(self.engine)
        start = self._rotation % len(namespaces)
        self._rotation += 1
        purged = examined = 0
        for ns in namespaces[start:] + namespaces[:start]:
            offset = 0
            while purged < SWEEP_BATCH and examined < SWEEP_EXAMINE:
                page = await redis.zrangebyscore(keys.ns_recent(ns), "-inf", oldest_kept, start=offset, num=PAGE)
                if not page:
                    break
                offset += len(page)
                roots = [r.decode() for r in page if not is_namespace(r.decode())]
                examined += len(roots)
                nodes = {n["key"]: n for n in await self.engine.read_many(roots)}
                for root in roots:
                    node = nodes.get(root)
                    if node is None:  # listed but gone (a crash between delete and unlisting)
                        await self.engine.unlist_tree(root)
                        offset -= 1
                        continue
                    finished = node.get("status") == "finished" and self.finished_age_ms
                    age = self.finished_age_ms if finished else self.max_age_ms
                    if age <= 0 or node["update_time"] > now - age:
                        continue
                    try:
                        if await self.service.delete(root, not_after=now - age) is not None:
                            purged += 1
                            offset -= 1  # it left the index: the page shifted
                    except NotFound:
                        await self.engine.unlist_tree(root)
                        offset -= 1
            if purged >= SWEEP_BATCH or examined >= SWEEP_EXAMINE:
                break
        if purged:
            log.info("retention purged %d trees", purged)
        self.purged += purged
        return purged


async def all_namespaces(engine) -> list[str]:
    """Every namespace, from the top one down.  Inner namespaces are the
    members whose last segment starts with '_'."""
    redis, keys = engine.redis, engine.keys
    found, stack = [], [""]
    while stack:
        ns = stack.pop()
        found.append(ns)
        async for child, _ in redis.zscan_iter(keys.ns(ns), match=f"{ns}._*" if ns else "_*", count=1000):
            if is_namespace(child.decode()):
                stack.append(child.decode())
    return found
