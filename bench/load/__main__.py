"""python -m bench.load: run the load test and write its report (see bench/load/__init__.py)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import orjson
import psutil
import uvloop
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from ..common import PrivateRedis, free_port, machine
from .jobs import job_key
from .report import write_report

DEPTHS = (1, 2, 3, 4, 5)


def args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    ap.add_argument("--jobs", type=int, default=2000, help="parallel simulated jobs")
    ap.add_argument("--rate", type=float, default=3000, help="updates per second the jobs aim at, together")
    ap.add_argument("--seconds", type=float, default=120, help="how long the jobs publish, at most")
    ap.add_argument("--updates", type=int, default=0, help="stop after the jobs sent this many updates (0: no limit)")
    ap.add_argument("--job-procs", type=int, default=2, help="processes the jobs are shared out over")
    ap.add_argument("--readers", type=int, default=4, help="REST readers")
    ap.add_argument("--subscribers", type=int, default=50, help="socket.io subscribers")
    ap.add_argument("--url", help="a running service (default: start one with a private Redis)")
    ap.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    ap.add_argument("--exchange", help="with --url: the exchange the service consumes (default progress)")
    ap.add_argument("--queue", help="with --url: the queue it consumes (for the backlog)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="bench/out/load", help="directory for the report")
    return ap


class Service:
    """The service under test: started here, or one already running."""

    def __init__(self, args) -> None:
        self.args = args
        self.proc = None
        self.redis = None
        self.url = args.url
        self.exchange = args.exchange or "progress"
        self.queue = args.queue or "progress"

    def start(self) -> None:
        if self.url:
            return
        tag = f"load-{uuid.uuid4().hex[:6]}"
        self.exchange, self.queue = f"{tag}.progress", f"{tag}.progress"
        self.redis = PrivateRedis()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sca_progress.server.cli", "serve", "--port", str(port), "--redis-url",
             self.redis.url, "--amqp-url", self.args.amqp_url, "--amqp-exchange", self.exchange,
             "--amqp-queue", self.queue, "--amqp-dead", f"{tag}.dead", "--amqp-events", f"{tag}.events",
             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pids(self) -> dict[str, int]:
        out = {"harness": os.getpid()}
        if self.proc:
            out["service"] = self.proc.pid
        if self.redis:
            out["redis"] = self.redis.proc.pid
        for p in psutil.process_iter(["name", "cmdline"]):
            if p.info["name"] == "beam.smp" and "rabbit@" in " ".join(p.info["cmdline"] or []) + "rabbit@":
                out.setdefault("rabbitmq", p.pid)
        return out

    async def cleanup(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(60)
            conn = await aio_pika.connect(self.args.amqp_url)
            ch = await conn.channel()
            for q in (self.queue, self.exchange.replace(".progress", ".dead")):
                await ch.queue_delete(q)
            for x in (self.exchange, self.exchange.replace(".progress", ".dead"),
                      self.exchange.replace(".progress", ".events")):
                await ch.exchange_delete(x)
            await conn.close()
        if self.redis:
            self.redis.close()


async def get_json(client, url: str):
    resp = await client.fetch(HTTPRequest(url, request_timeout=120), raise_error=False)
    return resp.code, (orjson.loads(resp.body) if resp.body else None)


async def wait_ready(client, url: str) -> None:
    for _ in range(600):
        try:
            code, body = await get_json(client, f"{url}/health")
            if code == 200 and body["amqp"].get("connected"):
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the service did not come up (or does not consume AMQP)")


async def backlog(amqp_url: str, queue: str) -> int | None:
    try:
        conn = await aio_pika.connect(amqp_url)
        try:
            ch = await conn.channel()
            q = await ch.declare_queue(queue, passive=True)
            return q.declaration_result.message_count
        finally:
            await conn.close()
    except Exception:  # noqa: BLE001 - reported as unknown
        return None


class Monitor:
    """Samples, once a second: ingested updates, backlog, Redis, CPU of each process."""

    def __init__(self, service: Service, client) -> None:
        self.service, self.client = service, client
        self.samples: list[dict] = []
        self.procs = {name: psutil.Process(pid) for name, pid in service.pids().items()}
        self.cpu0 = {name: sum(p.cpu_times()[:2]) for name, p in self.procs.items()}
        self.children: dict[int, float] = {}  # harness children (jobs, subscribers): last CPU seen, by pid

    def cpu(self) -> dict[str, float]:
        out = {}
        others = set(self.service.pids().values())
        for name, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system - self.cpu0[name]
                if name == "harness":  # its child processes (jobs, subscribers) are harness CPU too
                    for c in p.children(recursive=True):
                        if c.pid not in others:
                            with contextlib.suppress(psutil.NoSuchProcess):
                                self.children[c.pid] = sum(c.cpu_times()[:2])
                    out[name] += sum(self.children.values())
            except psutil.NoSuchProcess:
                pass
        return out

    async def sample(self, t0: float) -> dict:
        _, health = await get_json(self.client, f"{self.service.url}/health")
        info = self.service.redis.client.info() if self.service.redis else {}
        s = {"t": time.monotonic() - t0, "applied": health.get("updates_applied", 0),
             "backlog": await backlog(self.service.args.amqp_url, self.service.queue),
             "redis_memory": info.get("used_memory"),
             "redis_cpu": (info.get("used_cpu_user", 0) + info.get("used_cpu_sys", 0)) if info else None,
             "cpu": self.cpu()}
        self.samples.append(s)
        return s


async def reader(service: Service, client, started, stop: asyncio.Event, lat: dict, errors: dict) -> None:
    rng = random.Random()
    while not stop.is_set():
        if not started():
            await asyncio.sleep(0.1)
            continue
        j, depth = rng.randrange(started()), rng.choice(DEPTHS)
        t = time.perf_counter()
        code, _ = await get_json(client, f"{service.url}/status/{job_key(j)}?depth={depth}")
        ms = (time.perf_counter() - t) * 1000
        if code == 200:
            lat[depth].append((time.monotonic(), ms))
        elif code != 404:  # a job that has not reported yet
            errors[f"read {code}"] = errors.get(f"read {code}", 0) + 1
        await asyncio.sleep(0.02)


async def verify(service: Service, client, expected: dict) -> dict:
    """Every node the jobs sent, as the service has it: progress within 1e-9, status, children."""
    roots = sorted({k for k in expected if k.count(".") == 1})
    seen: dict[str, dict] = {}
    for root in roots:
        code, tree = await get_json(client, f"{service.url}/status/{root}?depth=4&limit=10000")
        stack = [tree] if code == 200 else []
        while stack:
            node = stack.pop()
            seen[node["key"]] = node
            stack.extend(node.get("tasks", []))
    lost, wrong = [], []
    for key, want in expected.items():
        got = seen.get(key)
        if got is None:
            lost.append(key)
        elif (abs(got.get("progress", 0) - want["progress"]) > 1e-9 or got.get("status") != want["status"]
              or got.get("_children", []) != want["children"]):
            wrong.append(key)
    return {"checked": len(expected), "lost": len(lost), "wrong": len(wrong), "examples": (lost + wrong)[:10]}


async def run(args) -> Path:
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    service = Service(args)
    service.start()
    client = AsyncHTTPClient(force_instance=True, max_clients=max(8, args.readers * 2))
    try:
        await wait_ready(client, service.url)
        subs_out = out / "subscribers.json"
        jobs_outs = [out / f"jobs-{i}.json" for i in range(args.job_procs)]
        job_procs = [subprocess.Popen(
            [sys.executable, "-m", "bench.load.jobs", "--jobs", str(args.jobs), "--rate", str(args.rate),
             "--seconds", str(args.seconds), "--seed", str(args.seed), "--procs", str(args.job_procs),
             "--updates", str(-(-args.updates // args.job_procs) if args.updates else 0),
             "--part", str(i), "--url", service.url, "--amqp-url", args.amqp_url, "--exchange", service.exchange,
             "--out", str(o)]) for i, o in enumerate(jobs_outs)]
        subs = subprocess.Popen([sys.executable, "-m", "bench.feed", "--role", "subscribers", "--url", service.url,
                                 "--trees", str(min(args.jobs, args.subscribers)), "--subscribers",
                                 str(args.subscribers), "--seconds", str(args.seconds + 30), "--out", str(subs_out),
                                 "--tree-format", "_load.job{}"])
        monitor = Monitor(service, client)
        t0 = time.monotonic()
        lat = {d: [] for d in DEPTHS}
        errors: dict[str, int] = {}
        stop = asyncio.Event()

        def started() -> int:
            return min(args.jobs, int((time.monotonic() - t0) * args.rate / 50) + 1)

        readers = [asyncio.create_task(reader(service, client, started, stop, lat, errors))
                   for _ in range(args.readers)]
        # Until the jobs are done, and what they sent is applied (bounded in time).
        deadline = t0 + args.seconds + 300
        drained_since = None
        while time.monotonic() < deadline:
            s = await monitor.sample(t0)
            sent = sum(json.loads(o.with_suffix(".progress").read_text())["sent"]
                       for o in jobs_outs if o.with_suffix(".progress").exists())
            print(f"\r  {s['t']:6.0f} s  sent {sent:>9,}  applied {s['applied']:>9,}  backlog {s['backlog'] or 0:>7,}",
                  end="", flush=True)
            if all(p.poll() is not None for p in job_procs) and (s["backlog"] or 0) == 0:
                sent = sum(json.loads(o.read_text())["sent"] for o in jobs_outs)
                if s["applied"] >= sent:
                    drained_since = drained_since or time.monotonic()
                    if time.monotonic() - drained_since > 2:
                        break
            await asyncio.sleep(1)
        print()
        stop.set()
        await asyncio.gather(*readers)
        for p in job_procs:
            if p.poll() is None:
                p.terminate()
            p.wait(60)
        subs.wait(args.seconds + 120)
        parts = [json.loads(o.read_text()) for o in jobs_outs]
        sent = {"sent": sum(p["sent"] for p in parts), "planned": sum(p["planned"] for p in parts),
                "seconds": max(p["seconds"] for p in parts), "expected": {}}
        for p in parts:
            sent["expected"].update(p["expected"])
            for k, v in p["errors"].items():
                errors[k] = errors.get(k, 0) + v
        check = await verify(service, client, sent["expected"])
        nodes = len(sent["expected"])
        result = {"machine": machine(), "args": {k: v for k, v in vars(args).items()}, "samples": monitor.samples,
                  "sent": sent["sent"], "planned": sent["planned"], "jobs_seconds": sent["seconds"],
                  "read_latency": {str(d): v for d, v in lat.items()},
                  "subscribers": json.loads(subs_out.read_text()) if subs_out.exists() else None,
                  "errors": errors, "check": check, "nodes": nodes,
                  "redis_version": service.redis.version if service.redis else None}
        write_report(result, out)
        return out
    finally:
        client.close()
        await service.cleanup()


def loopback_only(args) -> None:
    """The harness never loads anything but this machine."""
    from urllib.parse import urlsplit

    from sca_progress.server.auth import is_loopback

    for url in (args.url, args.amqp_url):
        host = urlsplit(url).hostname if url else "127.0.0.1"
        if not (host == "localhost" or is_loopback(host or "")):
            raise SystemExit(f"bench.load targets loopback only, not {url}")


def main() -> None:
    args = args_parser().parse_args()
    loopback_only(args)
    out = uvloop.run(run(args))
    print(f"report: {out}/report.md")
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
