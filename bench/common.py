"""Helpers shared by the benchmarks: a private Redis, its meters, the machine line."""
from __future__ import annotations

import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the benchmark's own (no persistence), so its CPU is ours alone."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        self.version = self.client.info("server")["redis_version"]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used (INFO cpu)."""
        info = self.client.info("cpu")
        return info["used_cpu_user"] + info["used_cpu_sys"]

    def used_memory(self) -> int:
        return self.client.info("memory")["used_memory"]

    def meter(self) -> "RedisMeter":
        return RedisMeter(self.client)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


#: Commands that run our scripts.  Their commandstats ``usec`` includes the
#: commands a script runs (which commandstats also lists on their own lines,
#: so summing every line would count them twice).
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


class RedisMeter:
    """Deltas of one Redis's CPU and command time between start() and stop().

    cpu_s        process CPU (INFO cpu: user + system): everything Redis did,
                 networking and parsing included
    script_s     time inside script calls (commandstats usec of EVALSHA/FCALL)
    script_calls number of script calls
    other_s      time of every command sent directly (not from a script)
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _read(self) -> dict:
        info = self.client.info("everything")
        stats = {k[len("cmdstat_"):]: v for k, v in info.items() if k.startswith("cmdstat_")}
        script = [stats[c] for c in SCRIPT_COMMANDS if c in stats]
        return {"cpu": info["used_cpu_user"] + info["used_cpu_sys"],
                "script_us": sum(s["usec"] for s in script), "script_calls": sum(s["calls"] for s in script),
                "all_us": sum(s["usec"] for s in stats.values()),
                "inner_us": sum(s["usec"] for name, s in stats.items() if name not in SCRIPT_COMMANDS)}

    def start(self) -> "RedisMeter":
        self.client.config_resetstat()
        self._t0 = self._read()
        return self

    def stop(self) -> dict:
        t1 = self._read()
        t0 = self._t0
        return {"cpu_s": t1["cpu"] - t0["cpu"], "script_s": (t1["script_us"] - t0["script_us"]) / 1e6,
                "script_calls": t1["script_calls"] - t0["script_calls"]}


def machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu or platform.processor()}), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def median(xs) -> float:
    return statistics.median(xs)


def pct(xs, q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]
