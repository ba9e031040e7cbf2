"""`sca-progress demo`: a simulated job that reports its progress over REST.

The job follows the spec's example.  It announces its three sequential steps
with ``progress: 0`` first, weighted 10/100/2, then runs them one after the
other:

    <job>.stage_input        weight 10   a few input files, staged three at a time
    <job>.processing         weight 100  many parts, eight at a time; some fail and are retried
    <job>.output_transfer    weight 2    one transfer, reporting its own progress

Statuses go waiting -> running -> finished, with failed (then waiting again)
for the parts that fail.  Every tick posts what changed as one batch
(``POST /status``).  At ``--speed 1`` the job takes about a minute; the
simulation runs on its own clock, so ``--speed 10`` replays the same job ten
times faster and a ``--seed`` makes it repeatable.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import secrets
from dataclasses import dataclass

import orjson
import uvloop
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger("sca_progress.demo")

DEFAULT_URL = "http://127.0.0.1:8080"
TICK_S = 0.5          # real seconds between two batches at speed 1
MIN_TICK_S = 0.05     # ... never shorter, however fast the replay
RETRY_AFTER_S = 3.0   # simulated seconds a failed part waits before it is retried


class DemoError(Exception):
    """The service refused or could not be reached."""


class Poster:
    """POSTs batches of updates to the service (with a bearer token, when given one)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/") + "/status"
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.client = AsyncHTTPClient()

    async def post(self, updates: list[dict]) -> None:
        if not updates:
            return
        request = HTTPRequest(self.url, method="POST", body=orjson.dumps(updates),
                              headers=self.headers, request_timeout=30)
        try:
            response = await self.client.fetch(request)
        except HTTPClientError as e:
            body = e.response.body if e.response is not None else None
            raise DemoError(f"POST {self.url}: {e}: {body.decode(errors='replace')[:300] if body else ''}") from None
        except OSError as e:
            raise DemoError(f"POST {self.url}: {e}") from None
        refused = [r for r in orjson.loads(response.body)["results"] if not r["ok"]]
        if refused:
            raise DemoError(f"POST {self.url}: refused {refused[0]}")


@dataclass
class Task:
    """One unit of simulated work: a file to stage or a part to process."""

    key: str
    name: str
    work: float                  # simulated seconds one attempt takes
    fails_at: float | None       # fraction of the first attempt at which it fails, or None
    status: str = "waiting"
    attempt: int = 1
    done: float = 0.0            # simulated seconds worked in this attempt
    retry_in: float = 0.0        # simulated seconds before a failed task is queued again


class Simulation:
    def __init__(self, poster: Poster, job: str, speed: float, rng: random.Random) -> None:
        self.poster = poster
        self.job = job
        self.rng = rng
        self.tick_s = max(MIN_TICK_S, TICK_S / speed)   # real seconds per tick
        self.step_s = self.tick_s * speed               # simulated seconds per tick

    async def tick(self) -> float:
        await asyncio.sleep(self.tick_s)
        return self.step_s

    def key(self, *segments: str) -> str:
        return ".".join((self.job, *segments))

    async def run(self, files: int, parts: int) -> None:
        # The spec: announce sequential steps with progress 0 first, so the job's
        # progress counts the steps that have not started.
        await self.poster.post([
            {"key": self.job, "name": "Demo job", "msg": "Starting", "status": "running"},
            {"key": self.key("stage_input"), "msg": "Staging input files", "weight": 10,
             "progress": 0, "status": "waiting"},
            {"key": self.key("processing"), "msg": "Processing", "weight": 100,
             "progress": 0, "status": "waiting"},
            {"key": self.key("output_transfer"), "msg": "Transferring output files", "weight": 2,
             "progress": 0, "status": "waiting"},
        ])
        inputs = [Task(self.key("stage_input", f"file{i:02d}"), f"sample_{i:02d}.fastq.gz",
                       self.rng.uniform(3, 7), None) for i in range(1, files + 1)]
        await self.step("stage_input", inputs, 3, f"Staging {files} input files", f"Staged {files} files")

        failing = set(self.rng.sample(range(parts), k=min(parts, max(2, parts // 5))))
        chunks = [Task(self.key("processing", f"part{i:03d}"), f"chunk {i + 1} of {parts}",
                       self.rng.uniform(4, 10), self.rng.uniform(0.2, 0.8) if i in failing else None)
                  for i in range(parts)]
        await self.step("processing", chunks, 8, f"Processing {parts} parts",
                        f"Processed {parts} parts ({len(failing)} retried)")

        await self.transfer(self.rng.uniform(4, 6), size_mb=120)
        await self.poster.post([{"key": self.job, "msg": "Job completed successfully", "status": "finished"}])

    async def step(self, name: str, tasks: list[Task], at_once: int, running_msg: str, done_msg: str) -> None:
        log.info("demo: %s", running_msg)
        step = self.key(name)
        await self.poster.post(
            [{"key": self.job, "msg": running_msg}, {"key": step, "status": "running", "msg": running_msg}]
            + [{"key": t.key, "name": t.name, "progress": 0, "status": "waiting", "msg": "Queued"} for t in tasks])
        while any(t.status != "finished" for t in tasks):
            dt = await self.tick()
            updates = [u for t in tasks if (u := self.advance(t, dt))]
            running = sum(t.status == "running" for t in tasks)
            for t in tasks:
                if running >= at_once:
                    break
                if t.status == "waiting":
                    t.status = "running"
                    running += 1
                    updates.append({"key": t.key, "status": "running", "msg": "Starting",
                                    "attempt": t.attempt, "worker": f"node-{self.rng.randint(1, 6)}"})
            await self.poster.post(updates)
        await self.poster.post([{"key": step, "status": "finished", "msg": done_msg}])

    def advance(self, t: Task, dt: float) -> dict | None:
        """One tick of *t*: the update to post, or None when nothing changed."""
        if t.status == "failed":
            t.retry_in -= dt
            if t.retry_in > 0:
                return None
            t.status, t.attempt, t.done, t.fails_at = "waiting", t.attempt + 1, 0.0, None
            return {"key": t.key, "status": "waiting", "progress": 0, "attempt": t.attempt,
                    "msg": f"Queued for retry (attempt {t.attempt})"}
        if t.status != "running":
            return None
        t.done += dt
        progress = min(1.0, t.done / t.work)
        if t.fails_at is not None and progress >= t.fails_at:
            t.status, t.retry_in = "failed", RETRY_AFTER_S
            return {"key": t.key, "status": "failed", "progress": round(t.fails_at, 3),
                    "msg": "Worker lost contact; will retry"}
        if progress >= 1:
            t.status = "finished"
            return {"key": t.key, "status": "finished", "progress": 1, "msg": "Done"}
        return {"key": t.key, "progress": round(progress, 3), "msg": f"Working on {t.name}"}

    async def transfer(self, seconds: float, size_mb: int) -> None:
        """The last step has no children: it reports its own progress."""
        log.info("demo: transferring output")
        key = self.key("output_transfer")
        await self.poster.post([{"key": self.job, "msg": "Transferring output files"}])
        done = 0.0
        while done < seconds:
            done += await self.tick()
            fraction = min(1.0, done / seconds)
            await self.poster.post([{"key": key, "status": "running", "progress": round(fraction, 3),
                                     "msg": f"Transferred {fraction * size_mb:.0f} of {size_mb} MB"}])
        await self.poster.post([{"key": key, "status": "finished", "progress": 1,
                                 "msg": f"Transferred {size_mb} MB"}])


async def run_demo(url: str = DEFAULT_URL, *, speed: float = 1.0, job: str | None = None,
                   seed: int | None = None, token: str | None = None, files: int = 5, parts: int = 24) -> str:
    """Run one simulated job against the service at *url*; returns its key."""
    if speed <= 0:
        raise DemoError("speed must be above 0")
    job = job or f"_portal.demo-{secrets.token_hex(3)}"
    log.info("demo: job %s; watch it at %s/ui/%s", job, url.rstrip("/"), job)
    await Simulation(Poster(url, token), job, speed, random.Random(seed)).run(files, parts)
    log.info("demo: %s finished", job)
    return job


def start_demo(host: str, port: int) -> asyncio.Task:
    """`serve --demo`: run the demo against this server, in the background."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    task = asyncio.create_task(run_demo(url), name="demo")
    task.add_done_callback(_report)
    return task


def _report(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("demo failed: %s", task.exception())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `sca-progress demo`."""
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="replay speed: 1 takes about a minute, 10 about six seconds")
    parser.add_argument("--job", default=None, help="the job's key (default _portal.demo-<random>)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the simulation, to repeat a run")
    parser.add_argument("--token", default=os.environ.get("PROGRESS_TOKEN"),
                        help="bearer token, when the service asks for one ($PROGRESS_TOKEN)")


def main(args: argparse.Namespace) -> int:
    """`sca-progress demo`: 0 once the job has finished, 1 when the service refused or was not there."""
    try:
        uvloop.run(run_demo(args.url, speed=args.speed, job=args.job, seed=args.seed, token=args.token))
    except DemoError as e:
        log.error("%s", e)
        return 1
    return 0
