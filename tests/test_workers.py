"""`serve --workers N`: processes sharing the port, restarted when they die, and
an AMQP intake partitioned so that per-node order survives a worker's death."""
from __future__ import annotations

import asyncio
import http.client
import os
import signal
import time
import urllib.request

import orjson
import psutil
import pytest

from .amqp_support import Producer, consistent_hash_missing, require_or_skip, wait_for
from .conftest import RUN_PREFIX
from .procs import start_service, stop_service


def request(base: str, method: str, path: str, body=None) -> tuple[int, dict]:
    """One request on a connection of its own (so the kernel may pick any worker)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=None if body is None else orjson.dumps(body))
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, orjson.loads(data) if data else {}
    finally:
        conn.close()


def workers_seen(base: str, tries: int = 300) -> dict[int, int]:
    """{worker index: pid} answering /health, over up to *tries* fresh connections."""
    seen: dict[int, int] = {}
    for _ in range(tries):
        status, body = request(base, "GET", "/health")
        assert status == 200
        seen[body["worker"]["index"]] = body["worker"]["pid"]
        if len(seen) == body["worker"]["of"]:
            break
    return seen


def test_workers_share_the_port_and_a_dead_one_is_restarted(tmp_path):
    from .cluster_support import cluster_port

    metrics_port = cluster_port(above=1)  # a free port, and the one above it for the second worker
    proc, base, log = start_service(["--workers", "2", "--data-dir", str(tmp_path / "data"),
                                     "--prefix", f"{RUN_PREFIX}-wk", "--metrics-port", str(metrics_port)])
    try:
        seen = workers_seen(base)
        assert sorted(seen) == [0, 1], log()
        assert set(seen.values()) == {c.pid for c in psutil.Process(proc.pid).children()
                                      if c.name() != "redis-server" and "redis" not in c.name()}
        # Whichever worker takes a write, every worker reads it (one Redis).
        for i in range(20):
            assert request(base, "POST", f"/status/_wk.j.s{i}", {"progress": 1})[0] == 200
        for _ in range(20):
            status, body = request(base, "GET", "/status/_wk.j")
            assert status == 200 and body["progress"] == 1 and len(body["_children"]) == 20

        # A live feed on one worker sees what the other workers apply (through Redis).
        from .feed_clients import sse_until

        def post_everywhere():
            for i in range(20):  # fresh connections: the kernel spreads them over both workers
                assert request(base, "POST", f"/status/_wk.j.s{i}", {"progress": 0.5, "msg": f"live {i}"})[0] == 200

        seen_by_feed = sse_until(base, "_wk.j", post_everywhere, b'"live 19"')
        assert all(f'"live {i}"'.encode() in seen_by_feed for i in range(20))

        os.kill(seen[1], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            again = workers_seen(base)
            if again.get(1) not in (None, seen[1]):
                break
            assert time.monotonic() < deadline, f"worker 1 was not restarted:\n{log()}"
            time.sleep(0.2)
        assert again[0] == seen[0]
        assert "worker 1 (pid %d) was killed by signal 9" % seen[1] in log()
        # --metrics-port: each worker's own /metrics on port + its index.
        for index in (0, 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port + index}/metrics", timeout=20) as resp:
                text = resp.read().decode()
            assert f'progress_worker{{pid="{again[index]}",worker="{index}",workers="2"}} 1.0' in text, text[-2000:]
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        assert stop_service(proc) == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_a_bad_worker_count_is_refused():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sca_progress.server.cli", "serve", "--workers", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--workers: '0' is neither a positive number nor auto" in out.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", [2, 3])
async def test_partitioned_intake_keeps_each_nodes_order_when_a_worker_dies(redis_url, amqp_url, amqp_names, workers):
    """Updates without ts are applied in arrival order, so a node's last message
    must be its final state.  A backlog drained by two consumers of one queue
    breaks that (each holds a share of every node's messages, and whichever
    applies last wins: about half the nodes end at an older value); the
    partitioned intake gives each node's messages to one consumer at a time.
    A worker killed mid-drain hands its partitions to the other, which gets
    the dead one's unacknowledged messages first, so the order still holds."""
    why = await consistent_hash_missing(amqp_url)
    if why:
        require_or_skip(why)
    names = amqp_names
    flags = ["--workers", str(workers), "--redis-url", redis_url, "--prefix", f"{RUN_PREFIX}-wq-{os.urandom(3).hex()}",
             "--amqp-url", amqp_url, "--amqp-partitions", "4", "--batch-wait", "0.02",
             "--batch-size", "250", "--prefetch", "500", *names.flags()]
    proc, _, _ = start_service(flags)  # declares the partitions, then stops: the backlog waits in them
    try:
        await wait_for(lambda: _partitions_consumed(amqp_url, names.queue, 4, workers), timeout=60,
                       what="every worker on every partition")
    finally:
        assert stop_service(proc) == 0
    nodes = [f"_wq.j{j % 20}.leaf{j}" for j in range(101)]  # odd: round-robin would split every node
    rounds = 200
    async with Producer(amqp_url, names.exchange) as p:
        await p.send_many([(key, {"progress": (r + 1) / rounds, "msg": f"round {r}"})
                           for r in range(rounds) for key in nodes])
    proc, base, log = start_service(flags)
    try:
        await wait_for(lambda: _partitions_consumed(amqp_url, names.queue, 4, 1), timeout=60, what="consumers")
        # Kill mid-drain: as soon as the backlog has begun to shrink (a fixed
        # pause let a fast machine drain it all first).
        total, deadline = rounds * len(nodes), time.monotonic() + 30
        while (left := await _backlog(amqp_url, names.queue, 4)) >= total and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        victim = workers_seen(base)[0]
        os.kill(victim, signal.SIGKILL)
        assert left > 1000, "the backlog drained before the kill: the test proves nothing"
        await wait_for(lambda: _all_final(base, nodes, rounds), timeout=120, what="every node at its last round")
        await wait_for(lambda: _logged(log, f"(pid {victim}) was killed by signal 9"), timeout=20,
                       what=f"the supervisor to see worker pid {victim} killed")
    finally:
        assert stop_service(proc) == 0


async def _declared(url: str, queue: str, partitions: int) -> list:
    """The partitions' declare-ok results (passive declares), or [] when not all exist yet."""
    import aio_pika

    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        return [(await ch.declare_queue(f"{queue}.p{i}", passive=True)).declaration_result
                for i in range(partitions)]
    except aio_pika.exceptions.ChannelClosed:
        return []
    finally:
        await conn.close()


async def _partitions_consumed(url: str, queue: str, partitions: int, consumers: int) -> bool:
    results = await _declared(url, queue, partitions)
    return bool(results) and all(r.consumer_count >= consumers for r in results)


async def _backlog(url: str, queue: str, partitions: int) -> int:
    return sum(r.message_count for r in await _declared(url, queue, partitions))


async def _all_final(base: str, nodes: list[str], rounds: int) -> bool:
    def check() -> bool:
        for key in nodes:
            status, body = request(base, "GET", f"/status/{key}")
            if status != 200 or body.get("msg") != f"round {rounds - 1}" or body["progress"] != 1:
                return False
        return True

    return await asyncio.to_thread(check)


async def _logged(log, text: str) -> bool:
    return text in log()
