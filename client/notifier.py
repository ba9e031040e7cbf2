"""An example notifier: which events of the events exchange deserve a message.

    python -m sca_progress.client.notifier --amqp-url amqp://guest:guest@127.0.0.1:5672/ \\
        [--exchange progress.events] [--bind '_portal.*'] [--queue NAME] [--quiet-under 60]

It binds a queue to the events exchange for job roots only (``_portal.*``:
one segment below the namespace) and decides per event:

    started        nothing: most jobs are short
    completed      "<job> finished after 3 d 4 h", only when the job ran for
                   at least --quiet-under seconds: a job that ends within a
                   minute gets no message at all
    long-running   "<job> is still working: 42 % done, ETA <date>" (the service
                   sends one --long-running-after the start, then every
                   --long-running-every: daily by default)
    stalled        "<job> is stalled since <time>" (when it stalled: it had not
                   changed for --stall-after, or was well past its eta)
    recovered      "<job> is moving again"

send() prints each message as one line; a real notifier would mail or chat
instead.  Events come at least once: the AMQP message id (the event id) is
remembered, so a repeat sends nothing.  Without --queue the queue is the
notifier's own (exclusive): events published while it is not running are not
kept for it.  Give --queue NAME for a durable one that keeps them.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import OrderedDict

import orjson

from .tree_view import human_duration


def message(event: dict, quiet_under_s: float) -> str | None:
    """The message an event deserves, or None."""
    key, kind = event["key"], event["event"]
    ran = human_duration(event.get("duration_ms") or 0)
    if kind == "completed":
        if (event.get("duration_ms") or 0) < quiet_under_s * 1000:
            return None
        return f"{key} {event.get('status') or 'ended'} after {ran}"
    if kind == "long-running":
        done = f"{event['progress']:.0%} done" if event.get("progress") is not None else "progress unknown"
        eta = f", ETA {_when(event['eta'])}" if event.get("eta") else ""
        return f"{key} is still working after {ran}: {done}{eta}"
    if kind == "stalled":
        return f"{key} is stalled since {_when(event['at'])}"
    if kind == "recovered":
        return f"{key} is moving again"
    return None  # started, and kinds this version does not know


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def send(text: str) -> None:
    print(text, flush=True)


async def run(args) -> int:
    import aio_pika

    conn = await aio_pika.connect_robust(args.amqp_url)
    seen: OrderedDict[str, None] = OrderedDict()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        channel = await conn.channel()
        exchange = await channel.declare_exchange(args.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        if args.queue:
            queue = await channel.declare_queue(args.queue, durable=True)
        else:
            queue = await channel.declare_queue(exclusive=True)
        for pattern in args.bind:
            await queue.bind(exchange, routing_key=pattern)

        async def on_message(msg) -> None:
            async with msg.process():
                if msg.message_id in seen:
                    return
                seen[msg.message_id] = None
                while len(seen) > 100_000:
                    seen.popitem(last=False)
                text = message(orjson.loads(msg.body), args.quiet_under)
                if text:
                    send(text)

        await queue.consume(on_message)
        print(f"notifier: listening to {args.exchange} for {' '.join(args.bind)}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await conn.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sca_progress.client.notifier", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--amqp-url", required=True)
    ap.add_argument("--exchange", default="progress.events")
    ap.add_argument("--bind", action="append", default=None, help="routing key pattern (default _portal.*)")
    ap.add_argument("--queue", default="", help="a durable queue of this name (default: an exclusive one)")
    ap.add_argument("--quiet-under", type=float, default=60.0,
                    help="seconds: a job that ran less than this gets no completion message")
    args = ap.parse_args(argv)
    args.bind = args.bind or ["_portal.*"]
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
