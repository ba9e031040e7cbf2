"""Live-feed benchmark: write-to-client latency with many subscribers under load.

    python -m bench.feed [--subscribers 200] [--trees 50] [--rates 500,5000] [--seconds 20]

A server process (`sca-progress serve`, default 100 ms tick) with a private
redis-server; a process of its own holding the socket.io subscribers
(python-socketio AsyncClients over websockets, spread over the trees); and
this process ingesting updates through batch POSTs at a set rate.  Every
update carries the wall-clock time it was sent (`sent_at`, ms; all processes
share this machine's clock), so a subscriber measures write-to-receipt
latency on every node state it gets.  A light rate runs first as the
baseline, then the full rate, in the same run.

Prints p50/p99/max latency, node states delivered per second and the ingest
rate achieved, for bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

from .common import PrivateRedis, free_port, machine


def tree_key(i: int) -> str:
    return f"_feed.job{i}"


# -- the subscriber process -----------------------------------------------------------

async def subscribers_main(url: str, trees: int, count: int, seconds: float, out: str,
                           tree_format: str = "_feed.job{}") -> None:
    import socketio

    latencies: list[float] = []
    states = 0
    ready = 0

    def client_for(tree: str):
        client = socketio.AsyncClient(reconnection=False)

        @client.on("snapshot")
        async def snapshot(data):
            nonlocal ready
            ready += 1

        @client.on("update")
        async def update(data):
            nonlocal states
            now = time.time() * 1000
            for node in data["nodes"]:
                states += 1
                sent = node.get("sent_at")
                # Only a leaf changes by its own posts alone; a parent keeps the
                # sent_at of its last post while roll-ups keep changing it.
                if sent is not None and "_status_counts" not in node:
                    latencies.append(now - sent)

        @client.on("connect")
        async def connect():
            await client.emit("subscribe", tree)

        return client

    clients = [client_for(tree_format.format(i % trees)) for i in range(count)]
    for i in range(0, count, 20):
        await asyncio.gather(*(c.connect(url, transports=["websocket"], wait_timeout=30) for c in clients[i:i + 20]))
    while ready < count:
        await asyncio.sleep(0.05)
    Path(out + ".ready").write_text("ready")
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - t0
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    Path(out).write_text(json.dumps({"latencies": latencies, "states": states, "seconds": elapsed}))


# -- the driver -------------------------------------------------------------------------

async def ingest(url: str, trees: int, rate: int, seconds: float, batch: int = 250) -> float:
    """POST batches of updates at *rate* updates/s for *seconds*; return the rate achieved."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    client = AsyncHTTPClient(force_instance=True, max_clients=8)
    rng = random.Random(3)
    sent = 0
    interval = batch / rate
    t0 = time.monotonic()
    pending = set()
    while time.monotonic() - t0 < seconds:
        now_ms = time.time() * 1000
        body = [{"key": f"{tree_key(rng.randrange(trees))}.s{rng.randrange(3)}.p{rng.randrange(20)}",
                 "progress": rng.random(), "sent_at": now_ms} for _ in range(batch)]
        task = asyncio.ensure_future(client.fetch(HTTPRequest(f"{url}/status", method="POST", body=orjson.dumps(body),
                                                              request_timeout=60)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += batch
        delay = t0 + sent / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while len(pending) > 8:
            await asyncio.sleep(interval / 4)
    await asyncio.gather(*pending)
    achieved = sent / (time.monotonic() - t0)
    client.close()
    return achieved


def start_server(redis_url: str, tick: float):
    port = free_port()
    env = {**os.environ, "PROGRESS_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "sca_progress.server.cli", "serve", "--port", str(port),
                             "--redis-url", redis_url, "--prefix", "feedbench", "--feed-tick", str(tick)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def one_rate(url: str, args, rate: int) -> dict:
    out = tempfile.mktemp(prefix="feedbench-")
    sub = subprocess.Popen([sys.executable, "-m", "bench.feed", "--role", "subscribers", "--url", url,
                            "--trees", str(args.trees), "--subscribers", str(args.subscribers),
                            "--seconds", str(args.seconds), "--out", out])
    while not Path(out + ".ready").exists():
        if sub.poll() is not None:
            raise RuntimeError("subscribers failed to start")
        await asyncio.sleep(0.1)
    achieved = await ingest(url, args.trees, rate, args.seconds - 1)
    sub.wait(120)
    data = json.loads(Path(out).read_text())
    os.unlink(out)
    os.unlink(out + ".ready")
    lat = sorted(data["latencies"])

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"rate": rate, "achieved": achieved, "states_per_s": data["states"] / data["seconds"],
            "samples": len(lat), "p50": q(0.5), "p99": q(0.99), "max": lat[-1] if lat else float("nan"),
            "mean": statistics.fmean(lat) if lat else float("nan")}


async def main(args) -> None:
    redis = PrivateRedis()
    proc, url = start_server(redis.url, args.tick)
    rows = []
    try:
        # Create the trees first, so the subscribers get snapshots of something.
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        body = [{"key": f"{tree_key(i)}.s{s}", "weight": w} for i in range(args.trees)
                for s, w in enumerate((10, 100, 2))]
        await AsyncHTTPClient().fetch(HTTPRequest(f"{url}/status", method="POST", body=orjson.dumps(body)))
        for rate in args.rates:
            row = await one_rate(url, args, rate)
            rows.append(row)
            print(f"  {rate:,} updates/s asked, {row['achieved']:,.0f} achieved: p50 {row['p50']:.0f} ms, "
                  f"p99 {row['p99']:.0f} ms, {row['states_per_s']:,.0f} node states/s delivered", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        redis.close()
    print()
    print(f"Machine: {machine()}; server, Redis {redis.version} (private), subscribers and load "
          f"generator share it.")
    print(f"Command: `python -m bench.feed --subscribers {args.subscribers} --trees {args.trees} "
          f"--rates {','.join(map(str, args.rates))} --seconds {args.seconds} --tick {args.tick}`\n")
    print("| ingest asked | ingest achieved | node states delivered/s | latency p50 | p99 | max | samples |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['rate']:,}/s | {r['achieved']:,.0f}/s | {r['states_per_s']:,.0f} | {r['p50']:.0f} ms | "
              f"{r['p99']:.0f} ms | {r['max']:.0f} ms | {r['samples']:,} |")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="driver", choices=["driver", "subscribers"])
    ap.add_argument("--url")
    ap.add_argument("--out")
    ap.add_argument("--subscribers", type=int, default=200)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")], default=[500, 5000])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tick", type=float, default=0.1)
    ap.add_argument("--tree-format", default="_feed.job{}", help="subscribers: key of tree i")
    args = ap.parse_args()
    if args.role == "subscribers":
        uvloop.run(subscribers_main(args.url, args.trees, args.subscribers, args.seconds, args.out,
                                    args.tree_format))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
