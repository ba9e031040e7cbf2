"""AMQP ingestion benchmark: the service against a bare aio-pika drain, same run.

    python -m bench.ingest [--messages 100000] [--publishers 4]

Against the machine's RabbitMQ (AMQP_URL, default guest@127.0.0.1:5672) with
queue names of its own, and a private redis-server.  For each setting:

1. bare drain: a plain aio-pika consumer with the same prefetch that only
   acknowledges, one multiple-ack per batch-size messages: the ceiling of this
   client stack on this machine;
2. service, pre-filled queue: the same messages, already queued, consumed by
   the service (batcher + engine + Redis) until all are applied, timed from
   the consumer's start; with completion events (each leaf that finishes
   publishes one, confirmed) and without;
3. service, publishers running: publisher processes (simulating the jobs'
   connections) publish while the service consumes.

Each run uses fresh queues; the kinds of run alternate, so the machine's
drifting load hits all of them alike, and the table shows medians.

Messages are the job workload of bench/engine.py: progress, status and msg
for the leaves of 2,000 jobs (depth-5 trees), ~100 bytes each.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import multiprocessing
import os
import time
import uuid

import aio_pika
import orjson
import uvloop

from .common import PrivateRedis, machine
from .engine import rounds, workload

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def declare(names: dict) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel()
    x = await ch.declare_exchange(names["exchange"], aio_pika.ExchangeType.TOPIC, durable=True)
    q = await ch.declare_queue(names["queue"], durable=True)
    await q.bind(x, routing_key="#")
    await conn.close()


async def cleanup(names: dict) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel()
    for q in (names["queue"], names["dead"]):
        await ch.queue_delete(q)
    for x in (names["exchange"], names["dead"], names["events"]):
        await ch.exchange_delete(x)
    await conn.close()


async def publish(exchange_name: str, messages: list[tuple[str, bytes]], persistent: bool = True) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel(publisher_confirms=False)
    x = await ch.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
    for key, body in messages:
        await x.publish(aio_pika.Message(body, delivery_mode=mode), routing_key=key)
    confirm = await conn.channel(publisher_confirms=True)  # a confirmed barrier: all above reached the broker
    cx = await confirm.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
    await cx.publish(aio_pika.Message(b'{"msg": "barrier"}'), routing_key="_bench.barrier")
    await conn.close()


def publisher_process(exchange_name: str, messages: list) -> None:
    uvloop.run(publish(exchange_name, messages))


async def queue_depth(queue: str) -> int:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel()
    q = await ch.declare_queue(queue, passive=True)
    await conn.close()
    return q.declaration_result.message_count


async def bare_drain(queue: str, total: int, prefetch: int, batch: int) -> float:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel()
    await ch.set_qos(prefetch_count=prefetch)
    q = await ch.declare_queue(queue, durable=True)
    done = asyncio.Event()
    seen = 0

    async def on_message(message):
        nonlocal seen
        seen += 1
        if seen % batch == 0 or seen == total:
            await message.ack(multiple=True)
        if seen == total:
            done.set()

    t0 = time.perf_counter()
    await q.consume(on_message)
    await done.wait()
    secs = time.perf_counter() - t0
    await conn.close()
    return secs


async def run_service(server: PrivateRedis, names: dict, total: int, batch_size: int, batch_wait: float,
                      publishers: list | None = None, events: bool = True) -> float:
    from sca_progress.server.app import make_app
    from sca_progress.server.settings import Settings

    settings = Settings(redis_url=server.url, prefix=f"bench-{uuid.uuid4().hex[:6]}", amqp_url=AMQP_URL,
                        amqp_exchange=names["exchange"], amqp_queue=names["queue"], amqp_dead=names["dead"],
                        amqp_events=names["events"] if events else "", batch_size=batch_size,
                        batch_wait=batch_wait)
    app = await make_app(settings)
    service = app.settings["service"]
    while not service.link.connected:  # timed from the first delivery on, like the drain
        await asyncio.sleep(0.001)
    t0 = time.perf_counter()
    procs = []
    for chunk in publishers or []:
        p = multiprocessing.Process(target=publisher_process, args=(names["exchange"], chunk))
        p.start()
        procs.append(p)
    while service.batcher.applied < total:
        await asyncio.sleep(0.05)
    secs = time.perf_counter() - t0
    for p in procs:
        p.join()
    await service.close()
    return secs


def messages_of(n: int, shape: str = "a") -> list[tuple[str, bytes]]:
    """n messages of the jobs' streams: shape a, every job's next update in
    turn (a batch holds about one update per tree, as real traffic); shape c,
    the streams shuffled together."""
    if shape == "a":
        ups = [u for r in rounds(2000, 123) for u in r][:n]
    else:
        ups = workload(2000, n)
    return [(key, orjson.dumps(fields)) for key, fields in ups]


async def one_setting(server: PrivateRedis, msgs: list, size: int, wait: float, repeats: int,
                      publishers: int) -> dict:
    """Alternate bare drain and service runs over fresh queues; medians of each."""
    prefetch = 2 * size
    runs = {"drain": [], "service": [], "service_no_events": [], "concurrent": []}
    for _ in range(repeats):
        for what in runs:
            names = {k: f"bench-{uuid.uuid4().hex[:8]}.{k}" for k in ("exchange", "queue", "dead", "events")}
            await declare(names)
            try:
                server.client.flushall()
                if what == "concurrent":
                    chunks = [msgs[i::publishers] for i in range(publishers)]
                    secs = await run_service(server, names, len(msgs) + publishers, size, wait, chunks)
                    runs[what].append((len(msgs) + publishers) / secs)
                    continue
                await publish(names["exchange"], msgs)
                total = await queue_depth(names["queue"])  # the messages and the barrier
                if what == "drain":
                    secs = await bare_drain(names["queue"], total, prefetch, size)
                else:
                    secs = await run_service(server, names, total, size, wait, events=what == "service")
                runs[what].append(total / secs)
            finally:
                await cleanup(names)
        print(f"  batch {size}, wait {wait}s: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in runs.items()),
              flush=True)
    row = {"batch_size": size, "batch_wait": wait, "prefetch": prefetch, "messages": len(msgs), "repeats": repeats}
    row.update({k: statistics.median(v) for k, v in runs.items()})
    row["ratios"] = sorted(s / d for s, d in zip(runs["service"], runs["drain"]))
    return row


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shape", choices=("a", "c"), default="a",
                    help="a: one update per tree per batch (every job in turn); c: the jobs' streams shuffled")
    ap.add_argument("--settings", default="500:0.02,2000:0.05,5000:0.1",
                    help="batch-size:batch-wait pairs to try")
    args = ap.parse_args()
    msgs = messages_of(args.messages, args.shape)
    server = PrivateRedis()
    rows = []
    try:
        for pair in args.settings.split(","):
            size, wait = int(pair.split(":")[0]), float(pair.split(":")[1])
            rows.append(await one_setting(server, msgs, size, wait, args.repeats, args.publishers))
    finally:
        server.close()
    print()
    print(f"Machine: {machine()}; RabbitMQ on the same host; private Redis {server.version} (no persistence).")
    print(f"Command: `python -m bench.ingest --shape {args.shape} --messages {args.messages} "
          f"--publishers {args.publishers} --repeats {args.repeats} --settings {args.settings}`\n")
    print("Medians of the repeats; the service/drain ratio is each service run over the drain run beside it.\n")
    print("| batch size | batch wait | prefetch | bare drain msg/s | service msg/s | service / drain (runs) "
          "| service, no events msg/s | service, publishers running msg/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratios = ", ".join(f"{x:.0%}" for x in r["ratios"])
        print(f"| {r['batch_size']:,} | {r['batch_wait'] * 1000:.0f} ms | {r['prefetch']:,} | {r['drain']:,.0f} | "
              f"{r['service']:,.0f} | {r['service'] / r['drain']:.0%} ({ratios}) | {r['service_no_events']:,.0f} | "
              f"{r['concurrent']:,.0f} |")


if __name__ == "__main__":
    uvloop.run(main())
