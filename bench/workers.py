"""One server process against two (`serve --workers`), side by side in one run.

    python -m bench.workers [--seconds 10] [--messages 40000] [--repeats 3]

A private redis-server; the machine's RabbitMQ with queue names of its own.
For --workers 1 and 2, alternating --repeats times:

1. REST: wrk (Debian's wrk), 8 keep-alive connections, each request a single
   POST to a leaf of another of 2,000 jobs (bench/rest.py's script);
2. AMQP: --messages of shape (a) (every job's next update in turn) published
   into the partitioned intake (--amqp-partitions 4 in both cases, so the
   topology is the same) while the service is stopped, then timed from the
   service's start until /health says all are applied.

Every process shares this machine's two cores: the load generator (wrk, the
publisher) and Redis compete with the workers, so two workers cannot reach
2x; what the ratio shows is how much of the second core the service can use.
Needs `wrk` (apt-get install wrk).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aio_pika
import orjson

from .common import PrivateRedis, free_port, machine
from .ingest import AMQP_URL, messages_of, publish
from .rest import BODY, JOBS, WRK_SCRIPT, run_wrk, wait_up


def serve(workers: int, port: int, redis_url: str, extra: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "sca_progress.server.cli", "serve", "--port", str(port),
                             "--redis-url", redis_url, "--workers", str(workers), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/health")
    return proc


def wait_ready(port: int, timeout: float = 60.0) -> None:
    """Until /health/ready says 200: Redis answers and the AMQP intake is consumed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5).status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not get ready")
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(120)


def applied_total(port: int, workers: int) -> int:
    """Updates applied, summed over the workers (each /health answers for the worker taking it)."""
    seen: dict[int, int] = {}
    for _ in range(200):
        body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read())
        seen[body["worker"]["pid"]] = body["updates_applied"]
        if len(seen) == workers:
            break
    return sum(seen.values())


async def cleanup(names: dict, partitions: int) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel()
    for q in [names["dead"], *(f"{names['queue']}.p{i}" for i in range(partitions))]:
        await ch.queue_delete(q)
    for x in (names["exchange"], f"{names['exchange']}.partitions", names["dead"]):
        await ch.exchange_delete(x)
    await conn.close()


def amqp_run(workers: int, redis: PrivateRedis, messages: list, partitions: int) -> float:
    tag = uuid.uuid4().hex[:8]
    names = {"exchange": f"bw-{tag}", "queue": f"bw-{tag}", "dead": f"bw-{tag}.dead"}
    flags = ["--amqp-url", AMQP_URL, "--amqp-exchange", names["exchange"], "--amqp-queue", names["queue"],
             "--amqp-dead", names["dead"], "--amqp-events", "", "--amqp-partitions", str(partitions),
             "--prefix", f"bw{tag}"]
    port = free_port()
    first = serve(workers, port, redis.url, flags)
    wait_ready(port)  # the partitions are declared (and consumed); stopped, the backlog then waits in them
    stop(first)
    asyncio.run(publish(names["exchange"], messages, persistent=False))
    t0 = time.perf_counter()
    proc = serve(workers, port, redis.url, flags)
    try:
        while applied_total(port, workers) < len(messages):
            time.sleep(0.05)
        return len(messages) / (time.perf_counter() - t0)
    finally:
        stop(proc)
        asyncio.run(cleanup(names, partitions))


def _runs(values) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not on the PATH: apt-get install wrk")
    redis = PrivateRedis()
    tmp = tempfile.mkdtemp(prefix="bench-workers-")
    script = str(Path(tmp) / "post.lua")
    Path(script).write_text(WRK_SCRIPT % {"jobs": JOBS, "body": orjson.dumps(BODY).decode()})
    messages = messages_of(args.messages, "a")
    rest: dict[int, list[dict]] = {1: [], 2: []}
    amqp: dict[int, list[float]] = {1: [], 2: []}
    try:
        for r in range(args.repeats):
            for workers in (1, 2):
                port = free_port()
                proc = serve(workers, port, redis.url, ["--prefix", f"bwr{r}{workers}"])
                try:
                    run_wrk(f"http://127.0.0.1:{port}/", 2, 8, script)  # warm up
                    rest[workers].append(run_wrk(f"http://127.0.0.1:{port}/", args.seconds, 8, script))
                finally:
                    stop(proc)
                amqp[workers].append(amqp_run(workers, redis, messages, 4))
            print(f"  round {r + 1}: REST {rest[1][-1]['rps']:,.0f} / {rest[2][-1]['rps']:,.0f} req/s, "
                  f"AMQP {amqp[1][-1]:,.0f} / {amqp[2][-1]:,.0f} msg/s (1 / 2 workers)", flush=True)
    finally:
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nMachine: {machine()}; private redis-server; RabbitMQ on the same host; load generators too.")
    print(f"Command: `python -m bench.workers --seconds {args.seconds:g} --messages {args.messages} "
          f"--repeats {args.repeats}`\n")
    print("| workers | REST single POSTs req/s (median) | p50 / p99 ms | AMQP shape (a) msg/s (median) | runs (REST; AMQP) |")
    print("|---:|---:|---|---:|---|")
    for w in (1, 2):
        print(f"| {w} | {statistics.median(x['rps'] for x in rest[w]):,.0f} | "
              f"{statistics.median(x['p50'] for x in rest[w]):.1f} / {statistics.median(x['p99'] for x in rest[w]):.1f} | "
              f"{statistics.median(amqp[w]):,.0f} | {_runs(x['rps'] for x in rest[w])}; {_runs(amqp[w])} |")
    print(f"\n2 workers / 1: REST {statistics.median(x['rps'] for x in rest[2]) / statistics.median(x['rps'] for x in rest[1]):.2f}x, "
          f"AMQP {statistics.median(amqp[2]) / statistics.median(amqp[1]):.2f}x")


if __name__ == "__main__":
    main()
