"""Simulated jobs: realistic plans, published over AMQP and REST; what was sent is recorded.

Every job follows the spec's shape:

    _load.job<j>.stage_input      weight 10, announced with progress 0; 3-6 files staged one by one
    _load.job<j>.processing       weight 100, announced with progress 0; 10-30 parts in parallel,
                                  a few failing once and being retried
    _load.job<j>.output_transfer  weight 2, announced with progress 0

The jobs are shared out over several processes (--procs, each --part); one
job always stays in one process.  Each update carries an increasing per-job `ts` (so a redelivered message can
never roll progress back) and `sent_at` (wall-clock ms, for the subscribers'
latency).  Most jobs publish over AMQP (one message per update, as a job
process would); a share posts single updates over REST, a share batches its
updates into POST /status.  The expected trees are built with the same
plain-Python model the tests use (tests/model.py).
"""
from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import aio_pika
import orjson
import uvloop

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.model import Model  # noqa: E402  (the model of the property tests)


def job_key(j: int) -> str:
    return f"_load.job{j}"


def plan(j: int, rng: random.Random) -> list[tuple[str, dict]]:
    """The updates one job sends, in order."""
    root = job_key(j)
    ups: list[tuple[str, dict]] = [(root, {"status": "running", "msg": "starting", "name": f"job {j}"})]
    for step, w in (("stage_input", 10), ("processing", 100), ("output_transfer", 2)):
        ups.append((f"{root}.{step}", {"progress": 0, "weight": w, "status": "waiting"}))
    for f in range(rng.randint(3, 6)):
        leaf = f"{root}.stage_input.file{f}"
        for p in (0, 0.5, 1):
            ups.append((leaf, {"progress": p, "status": "finished" if p == 1 else "running", "msg": f"staging {p:.0%}"}))
    ups.append((f"{root}.stage_input", {"status": "finished"}))
    parts = [f"{root}.processing.part{i}" for i in range(rng.randint(10, 30))]
    steps = {p: [0.25, 0.5, 0.75, 1.0] for p in parts}
    failing = {p for p in parts if rng.random() < 0.05}
    ups.append((f"{root}.processing", {"status": "running"}))
    while steps:
        part = rng.choice(list(steps))
        p = steps[part].pop(0)
        if part in failing and p == 0.5:
            ups.append((part, {"progress": p, "status": "failed", "msg": "lost the worker; retrying"}))
            failing.discard(part)
            steps[part] = [0.25, 0.5, 0.75, 1.0]  # retried from the start
            continue
        ups.append((part, {"progress": p, "status": "finished" if p == 1 else "running", "msg": f"part at {p:.0%}"}))
        if not steps[part]:
            del steps[part]
    ups.append((f"{root}.processing", {"status": "finished"}))
    for p in (0, 0.5, 1):
        ups.append((f"{root}.output_transfer", {"progress": p, "status": "finished" if p == 1 else "running"}))
    ups.append((root, {"status": "finished", "msg": "done"}))
    return ups


class Sender:
    """Sends one job's updates over its path; counts what went out."""

    def __init__(self, exchange, url: str, http) -> None:
        self.exchange = exchange
        self.url = url
        self.http = http
        self.sent = 0
        self.errors: dict[str, int] = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def amqp(self, key: str, fields: dict) -> None:
        try:
            await self.exchange.publish(aio_pika.Message(orjson.dumps(fields),
                                                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                        routing_key=key)
            self.sent += 1
        except Exception as e:  # noqa: BLE001 - counted, the run goes on
            self.error(f"amqp publish: {type(e).__name__}")

    async def rest(self, path: str, body) -> None:
        from tornado.httpclient import HTTPRequest

        resp = await self.http.fetch(HTTPRequest(f"{self.url}{path}", method="POST", body=orjson.dumps(body),
                                                 request_timeout=120), raise_error=False)
        if resp.code != 200:
            self.error(f"REST {resp.code}")
            return
        items = body if isinstance(body, list) else [body]
        self.sent += len(items)
        if isinstance(body, list):
            for r in orjson.loads(resp.body)["results"]:
                if not r["ok"]:
                    self.error(f"REST item {r['error']['code']}")


async def run_jobs(args) -> None:
    from tornado.httpclient import AsyncHTTPClient

    rng = random.Random(args.seed)
    mine = [j for j in range(args.jobs) if j % args.procs == args.part]  # this process's share
    plans = {j: plan(j, random.Random(args.seed * 1_000_003 + j)) for j in mine}
    total = sum(len(p) for p in plans.values())
    # Pace: spread every job's updates over the run so the total rate is about --rate.
    interval = args.jobs / args.rate
    conn = await aio_pika.connect(args.amqp_url)
    channels = [await conn.channel(publisher_confirms=False) for _ in range(4)]
    exchanges = [await ch.declare_exchange(args.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
                 for ch in channels]
    http = AsyncHTTPClient(force_instance=True, max_clients=16)
    senders = [Sender(x, args.url, http) for x in exchanges]
    model = Model()
    ts_of = {}
    start = time.monotonic()
    deadline = start + args.seconds

    async def job(j: int) -> None:
        sender = senders[j % len(senders)]
        path = "amqp" if j % 10 < 8 else "rest" if j % 10 == 8 else "batch"
        await asyncio.sleep(rng.random() * interval)
        pending = []
        for key, fields in plans[j]:
            if time.monotonic() > deadline or (args.updates and sum(x.sent for x in senders) >= args.updates):
                break
            ts_of[j] = ts_of.get(j, 0) + 1
            fields = {**fields, "ts": ts_of[j], "sent_at": time.time() * 1000}
            model.post(key, {k: v for k, v in fields.items() if k != "sent_at"})
            if path == "amqp":
                await sender.amqp(key, fields)
            elif path == "rest":
                await sender.rest(f"/status/{key}", fields)
            else:
                pending.append({"key": key, **fields})
                if len(pending) >= 5:
                    await sender.rest("/status", pending)
                    pending = []
            await asyncio.sleep(interval * (0.5 + rng.random()))
        if pending:
            await sender.rest("/status", pending)

    async def progress() -> None:
        out = Path(args.out)
        while True:
            sent = sum(s.sent for s in senders)
            out.with_suffix(".progress").write_text(json.dumps({"sent": sent, "planned": total,
                                                               "t": time.monotonic() - start}))
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(progress())
    await asyncio.gather(*(job(j) for j in mine))
    reporter.cancel()
    await conn.close()
    http.close()
    errors: dict[str, int] = {}
    for s in senders:
        for k, v in s.errors.items():
            errors[k] = errors.get(k, 0) + v
    expected = {key: {"progress": model.progress(key), "status": node["fields"].get("status"),
                      "children": node["children"]} for key, node in model.nodes.items()}
    Path(args.out).write_text(json.dumps({"sent": sum(s.sent for s in senders), "planned": total,
                                          "seconds": time.monotonic() - start, "errors": errors,
                                          "expected": expected}))


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    for name, kind in (("--jobs", int), ("--rate", float), ("--seconds", float), ("--seed", int),
                       ("--procs", int), ("--part", int), ("--updates", int)):
        ap.add_argument(name, type=kind, required=True)
    for name in ("--url", "--amqp-url", "--exchange", "--out"):
        ap.add_argument(name, required=True)
    uvloop.run(run_jobs(ap.parse_args()))


if __name__ == "__main__":
    main()
