"""The service of one server process: its Redis, its engine, and the path every write takes.

REST handlers (and the AMQP consumer) call Service.apply / Service.delete, never
the engine's writers directly, so whatever must follow a write (waking the
garbage collector, publishing changes to live feeds) happens in one place.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aredis

from sca_progress.engine import ApplyResult, DeleteResult, Engine, StorageUnavailable, now_ms
from sca_progress.engine.embedded import EmbeddedRedis

from .settings import Settings

log = logging.getLogger("sca_progress.service")


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None
        self.redis: aredis.Redis | None = None
        self.engine: Engine | None = None
        self._gc_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        s = self.settings
        url = s.redis_url
        if not url:
            self.embedded = EmbeddedRedis(s.data_dir, appendfsync=s.appendfsync)
            url = await asyncio.to_thread(self.embedded.start)
            log.info("no --redis-url: started an embedded Redis under %s (appendfsync %s)",
                     self.embedded.data_dir, s.appendfsync)
        self.redis = aredis.from_url(url, socket_connect_timeout=5, socket_timeout=30,
                                     health_check_interval=30)
        self.engine = Engine(self.redis, prefix=s.prefix, eta_window_ms=int(s.eta_window * 1000))
        await self._until_redis_answers()
        self._tasks.append(asyncio.create_task(self._collect_garbage(), name="gc"))

    async def _until_redis_answers(self) -> None:
        """Load the scripts, waiting (capped backoff) while Redis is unreachable."""
        delay = 0.5
        while True:
            try:
                await self.engine.start()
                return
            except StorageUnavailable as e:
                log.warning("%s; retrying in %.1f s", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.redis is not None:
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)

    # -- the write path ----------------------------------------------------------

    async def apply(self, updates) -> ApplyResult:
        return await self.engine.apply(updates)

    async def delete(self, key: str) -> DeleteResult:
        result = await self.engine.delete(key)
        self._gc_wanted.set()
        return result

    # -- housekeeping ------------------------------------------------------------

    async def health(self) -> dict:
        redis_ok = await self.engine.ping()
        return {"status": "ok" if redis_ok else "unavailable",
                "redis": "ok" if redis_ok else "unreachable",
                "_now": now_ms()}

    async def _collect_garbage(self) -> None:
        """Free deleted subtrees: after each delete, and every gc_interval seconds."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._gc_wanted.wait(), self.settings.gc_interval)
            self._gc_wanted.clear()
            try:
                await self.engine.collect_garbage()
            except Exception as e:  # noqa: BLE001 - keep sweeping whatever happened
                log.warning("garbage collection failed: %s", e)
