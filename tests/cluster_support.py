"""A Redis Cluster of the tests' own: three masters of the PATH's redis-server on free ports."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import redis



def cluster_port(above: int = 10_000) -> int:
    """A free port whose port + *above* is free too (a cluster node's bus port)."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20_000, 45_000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + above))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    def __init__(self, masters: int = 3) -> None:
        self.ports = [cluster_port() for _ in range(masters)]
        self.dir = tempfile.mkdtemp(prefix="sca-cluster-")
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=30)

    def start(self) -> "LocalCluster":
        for port in self.ports:
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", f"{self.dir}/nodes-{port}.conf", "--cluster-node-timeout", "2000",
                 "--save", "", "--appendonly", "no", "--dir", self.dir],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda p=port: self.node(p).ping(), f"node {port}")
        out = subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                              "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        for port in self.ports:
            self._wait(lambda p=port: self.node(p).cluster("info")["cluster_state"] == "ok", f"cluster state at {port}")
        return self

    def owner(self, slot: int) -> int:
        """The port of the master serving *slot*."""
        for start, end, master, *_ in self.node(self.ports[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(slot)

    def node_id(self, port: int) -> str:
        return self.node(port).execute_command("CLUSTER MYID").decode()

    def migrate_slot(self, slot: int, to_port: int, keys_per_step: int = 1, pause: float = 0.0) -> int:
        """Move *slot* to the master on *to_port* the way redis-cli --cluster
        reshard does (IMPORTING / MIGRATING, MIGRATE key by key, then NODE on
        every master), pausing between keys so writers meet ASK redirections.
        Returns how many keys moved."""
        from_port = self.owner(slot)
        if from_port == to_port:
            return 0
        src, dst = self.node(from_port), self.node(to_port)
        src_id, dst_id = self.node_id(from_port), self.node_id(to_port)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_per_step)
            if not keys:
                break
            src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 10_000, "KEYS", *keys)
            moved += len(keys)
            if pause:
                time.sleep(pause)
        for port in self.ports:
            self.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return moved

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait(check, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (redis.ConnectionError, redis.ResponseError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)
