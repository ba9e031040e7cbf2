"""Live-feed benchmark: write-to-client latency with many subscribers under load.

    python -m bench.feed [--subscribers 200] [--trees 50] [--rates 500,5000] [--seconds 20]
    python -m bench.feed --shape hot [--subscribers 100,1000] [--transport sio|sse] [--rate 1000] [--seconds 30]

Two shapes.  *spread* (the default) is described below.  *hot* is one busy
job watched by many dashboards: N subscribers (socket.io or SSE, in a
process of their own) all follow one tree while another process posts
single updates (POST /status/<key>, 32 keep-alive connections) to its 200
leaves at a set rate.  Each post carries its send time and a per-leaf
sequence number; the report gives POST latency, POST-to-receipt latency,
whether every subscriber got every leaf's final state, and how long after
the load stopped the last subscriber had them all (the feed's backlog
draining).  Shape spread:

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

class FastJson:
    """python-socketio's json hook: orjson, as a dashboard's browser parses natively."""

    @staticmethod
    def dumps(obj, **_kw):
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s, **_kw):
        return orjson.loads(s)


async def hold(ready, count: int, seconds: float, out: str, closers) -> float:
    """Once *ready()* reaches *count*, say so (out + '.ready'), follow for
    *seconds*, close every client; the seconds followed."""
    while ready() < count:
        await asyncio.sleep(0.05)
    Path(out + ".ready").write_text("ready")
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - t0
    await asyncio.gather(*(c() for c in closers), return_exceptions=True)
    return elapsed


def follower(key: str, on_snapshot, on_update):
    """A socket.io client that subscribes to *key* once connected."""
    import socketio

    client = socketio.AsyncClient(reconnection=False, json=FastJson)

    @client.on("snapshot")
    async def snapshot(data):
        on_snapshot()

    @client.on("update")
    async def update(data):
        on_update(data)

    @client.on("connect")
    async def connect():
        await client.emit("subscribe", key)

    return client


async def subscribers_main(url: str, trees: int, count: int, seconds: float, out: str,
                           tree_format: str = "_feed.job{}") -> None:
    latencies: list[float] = []
    states = 0
    ready = 0

    def snapshot():
        nonlocal ready
        ready += 1

    def update(data):
        nonlocal states
        now = time.time() * 1000
        for node in data["nodes"]:
            states += 1
            sent = node.get("sent_at")
            # Only a leaf changes by its own posts alone; a parent keeps the
            # sent_at of its last post while roll-ups keep changing it.
            if sent is not None and "_status_counts" not in node:
                latencies.append(now - sent)

    def client_for(tree: str):
        return follower(tree, snapshot, update)

    clients = [client_for(tree_format.format(i % trees)) for i in range(count)]
    for i in range(0, count, 20):
        await asyncio.gather(*(c.connect(url, transports=["websocket"], wait_timeout=30) for c in clients[i:i + 20]))
    elapsed = await hold(lambda: ready, count, seconds, out, [c.disconnect for c in clients])
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


# -- shape hot: one busy tree, many subscribers, single POSTs ---------------------------

HOT = "_hot.job"
LEAVES = [f"{HOT}.s{a}.p{b}" for a in range(10) for b in range(20)]


async def hot_subscribers_main(url: str, count: int, transport: str, seconds: float, out: str) -> None:
    """Follow the hot tree with *count* clients until *seconds* have passed; record,
    per client, every leaf's latest seq and when it arrived, and latencies."""
    latencies: list[float] = []
    latest = [dict() for _ in range(count)]  # leaf -> (seq, arrival ms)
    ready = 0
    states = 0

    def on_update(i: int, data: dict) -> None:
        nonlocal states
        now = time.time() * 1000
        mine = latest[i]
        for node in data["nodes"]:
            states += 1
            seq = node.get("seq")
            if seq is None:
                continue
            latencies.append(now - node["sent_at"])
            if seq > mine.get(node["key"], (-1, 0))[0]:
                mine[node["key"]] = (seq, now)

    closers = []
    if transport == "sio":
        def snapshot():
            nonlocal ready
            ready += 1

        def client_for(i: int):
            return follower(HOT, snapshot, lambda data: on_update(i, data))

        clients = [client_for(i) for i in range(count)]
        closers = [c.disconnect for c in clients]
        for j in range(0, count, 25):
            await asyncio.gather(*(c.connect(url, transports=["websocket"], wait_timeout=60)
                                   for c in clients[j:j + 25]))
    else:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        http = AsyncHTTPClient(force_instance=True, max_clients=count + 10)

        def reader(i: int):
            buf = b""

            def chunk(data: bytes) -> None:
                nonlocal buf, ready
                buf += data
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
                    if fields.get(b"event") == b"snapshot":
                        ready += 1
                    elif fields.get(b"event") == b"update":
                        on_update(i, orjson.loads(fields[b"data"]))
            return chunk

        tasks = [asyncio.ensure_future(http.fetch(HTTPRequest(f"{url}/events/{HOT}", streaming_callback=reader(i),
                                                               request_timeout=3600), raise_error=False))
                 for i in range(count)]

        async def close_all():
            for t in tasks:
                t.cancel()
        closers.append(close_all)
    elapsed = await hold(lambda: ready, count, seconds, out, closers)
    Path(out).write_text(json.dumps({"latencies": latencies, "latest": latest, "states": states,
                                     "seconds": elapsed}))


class RawHttp:
    """A keep-alive HTTP/1.1 connection speaking just enough to POST JSON and
    read the answer: the load generator must cost the machine less than the
    service it loads (tornado's client took 60 % of a core for 600 POST/s)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.writer.close()
            self.writer = None
        return status


async def hot_load(url: str, rate: int, seconds: float, out: str) -> None:
    """Single POSTs to the hot tree's leaves at *rate*/s for *seconds*, from 32
    keep-alive connections; write POST latencies and each leaf's last seq."""
    host, port = url.split("//")[1].split(":")
    idle = [RawHttp(host, int(port)) for _ in range(32)]
    waiting: asyncio.Queue = asyncio.Queue()
    for c in idle:
        waiting.put_nowait(c)
    seqs = {leaf: 0 for leaf in LEAVES}
    post_ms: list[float] = []
    errors = 0
    pending: set = set()

    async def one(leaf: str, seq: int) -> None:
        nonlocal errors
        conn = await waiting.get()
        t = time.perf_counter()
        body = orjson.dumps({"progress": (seq % 100) / 100, "seq": seq, "sent_at": time.time() * 1000,
                             "status": "running"})
        try:
            code = await conn.post(f"/status/{leaf}", body)
        except (OSError, asyncio.IncompleteReadError):
            conn.writer, code = None, 0
        post_ms.append((time.perf_counter() - t) * 1000)
        waiting.put_nowait(conn)
        if code != 200:
            errors += 1

    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < seconds:
        leaf = LEAVES[n % len(LEAVES)]
        seqs[leaf] += 1
        task = asyncio.ensure_future(one(leaf, seqs[leaf]))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
        delay = t0 + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*pending)
    stopped = time.time() * 1000
    Path(out).write_text(json.dumps({"post_ms": post_ms, "final": seqs, "stopped_ms": stopped, "sent": n,
                                     "errors": errors, "achieved": n / (time.monotonic() - t0)}))


def hot_load_process(url: str, rate: int, seconds: float, out: str) -> None:
    uvloop.run(hot_load(url, rate, seconds, out))


async def one_hot(url: str, args, count: int) -> dict:
    out = tempfile.mktemp(prefix="feedbench-hot-")
    grace = 10.0
    sub = subprocess.Popen([sys.executable, "-m", "bench.feed", "--role", "hot-subscribers", "--url", url,
                            "--subscribers", str(count), "--transport", args.transport,
                            "--seconds", str(args.seconds + grace), "--out", out])
    while not Path(out + ".ready").exists():
        if sub.poll() is not None:
            raise RuntimeError("subscribers failed to start")
        await asyncio.sleep(0.1)
    load_out = out + ".load"
    load = subprocess.Popen([sys.executable, "-m", "bench.feed", "--role", "hot-load", "--url", url,
                             "--rate", str(args.rate), "--seconds", str(args.seconds), "--out", load_out])
    load.wait()
    sub.wait()
    got, sent = json.loads(Path(out).read_text()), json.loads(Path(load_out).read_text())
    for f in (out, out + ".ready", load_out):
        os.unlink(f)
    final, stopped = sent["final"], sent["stopped_ms"]
    complete, drain = 0, 0.0
    for mine in got["latest"]:
        if all(mine.get(leaf, (0, 0))[0] == seq for leaf, seq in final.items() if seq):
            complete += 1
            drain = max(drain, max(mine[leaf][1] for leaf, seq in final.items() if seq) - stopped)
    lat, posts = sorted(got["latencies"]), sorted(sent["post_ms"])

    def q(xs, p):
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    return {"subscribers": count, "transport": args.transport, "rate": args.rate, "achieved": sent["achieved"],
            "post_p50": q(posts, 0.5), "post_p99": q(posts, 0.99), "post_errors": sent["errors"],
            "feed_p50": q(lat, 0.5), "feed_p99": q(lat, 0.99), "feed_max": lat[-1] if lat else float("nan"),
            "complete": complete, "drain_ms": drain, "states_per_s": got["states"] / got["seconds"]}


async def hot_main(args) -> None:
    redis = PrivateRedis()
    proc, url = start_server(redis.url, args.tick)
    rows = []
    try:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        body = [{"key": leaf, "progress": 0, "seq": 0, "sent_at": 0} for leaf in LEAVES]
        await AsyncHTTPClient().fetch(HTTPRequest(f"{url}/status", method="POST", body=orjson.dumps(body)))
        for count in args.subscriber_counts:
            row = await one_hot(url, args, count)
            rows.append(row)
            print(f"  {count} {row['transport']} subscribers, {row['achieved']:,.0f} POST/s: POST p99 "
                  f"{row['post_p99']:.0f} ms, feed p50 {row['feed_p50']:.0f} / p99 {row['feed_p99']:.0f} ms, "
                  f"{row['complete']}/{count} complete, drained {row['drain_ms']:.0f} ms after the load",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        redis.close()
    print()
    print(f"Machine: {machine()}; server, Redis {redis.version} (private), subscribers and load generator "
          f"share it.")
    print(f"Command: `python -m bench.feed --shape hot --subscribers "
          f"{','.join(map(str, args.subscriber_counts))} --transport {args.transport} --rate {args.rate} "
          f"--seconds {args.seconds} --tick {args.tick}`\n")
    print("| subscribers | POST/s achieved | POST p50 / p99 | feed p50 / p99 / max | every final state | drained after "
          "| node states delivered/s | POST errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['subscribers']:,} {r['transport']} | {r['achieved']:,.0f} | {r['post_p50']:.0f} / "
              f"{r['post_p99']:.0f} ms | {r['feed_p50']:.0f} / {r['feed_p99']:.0f} / {r['feed_max']:.0f} ms | "
              f"{r['complete']}/{r['subscribers']} | {r['drain_ms']:.0f} ms | {r['states_per_s']:,.0f} | "
              f"{r['post_errors']} |")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="driver", choices=["driver", "subscribers", "hot-subscribers", "hot-load"])
    ap.add_argument("--shape", default="spread", choices=["spread", "hot"])
    ap.add_argument("--transport", default="sio", choices=["sio", "sse"], help="hot: socket.io or SSE subscribers")
    ap.add_argument("--rate", type=int, default=1000, help="hot: single POSTs per second")
    ap.add_argument("--url")
    ap.add_argument("--out")
    ap.add_argument("--subscribers", default="200", help="how many (hot: a comma-separated list of counts)")
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--rates", type=lambda v: [int(x) for x in v.split(",")], default=[500, 5000])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--tick", type=float, default=0.1)
    ap.add_argument("--tree-format", default="_feed.job{}", help="subscribers: key of tree i")
    args = ap.parse_args()
    args.subscriber_counts = [int(x) for x in args.subscribers.split(",")]
    args.subscribers = args.subscriber_counts[0]
    if args.role == "subscribers":
        uvloop.run(subscribers_main(args.url, args.trees, args.subscribers, args.seconds, args.out,
                                    args.tree_format))
    elif args.role == "hot-subscribers":
        uvloop.run(hot_subscribers_main(args.url, args.subscribers, args.transport, args.seconds, args.out))
    elif args.role == "hot-load":
        hot_load_process(args.url, args.rate, args.seconds, args.out)
    elif args.shape == "hot":
        uvloop.run(hot_main(args))
    else:
        uvloop.run(main(args))


if __name__ == "__main__":
    cli()
