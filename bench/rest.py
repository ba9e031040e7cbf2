"""REST benchmark: single POSTs and batch POSTs, beside a bare Tornado handler in the same run.

    python -m bench.rest [--requests 20000] [--concurrency 8] [--repeats 3]

A private redis-server, the service (`sca-progress serve`, default settings,
its own process) and the baseline (bench/bare.py: a Tornado server, uvloop,
whose POST answers a constant JSON body) on this machine; the load comes
from other processes:

1. single POSTs to one node, as `ab -k -c 8` makes them (apache2-utils):
   keep-alive clients posting {progress, msg, status} to one leaf;
2. single POSTs from many jobs: wrk (Debian's wrk) with a Lua script that
   posts each request to a leaf of another of 2,000 jobs;
3. batch POSTs of shape (a): 1,000 items a request, each an update of a
   different job of 2,000 (what a fleet's collector sends), from this
   process with one keep-alive connection, then with two.

Runs of the bare baseline and of the service alternate, --repeats times;
the tables show medians and the service/bare ratio of each pair.  The
service's applied updates are read from /health before and after, so
requests/s are also checked against updates really applied.

Needs `ab` and `wrk` on the PATH (`apt-get install apache2-utils wrk`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

from .common import PrivateRedis, free_port, machine

BODY = {"progress": 0.5, "msg": "at 50%", "status": "running"}
JOBS = 2000

#: wrk script: each request posts to a leaf of another job (round robin).
WRK_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  local job = n %% %(jobs)d
  return wrk.format("POST", "/status/_rest.job" .. job .. ".process.p" .. (n %% 4) .. ".f" .. (n %% 3),
                    {["Content-Type"] = "application/json"}, '%(body)s')
end
"""


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # answering (a 404 or 405 is an answer)
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.1)


def start(cmd: list[str], url: str) -> subprocess.Popen:
    env = {**os.environ, "PROGRESS_LOG_LEVEL": os.environ.get("PROGRESS_LOG_LEVEL", "info")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_up(url)
    return proc


def applied(service: str) -> int:
    return json.loads(urllib.request.urlopen(service + "/health").read())["updates_applied"]


def run_ab(url: str, requests: int, concurrency: int, body_file: str) -> dict:
    out = subprocess.run(["ab", "-q", "-k", "-c", str(concurrency), "-n", str(requests), "-p", body_file,
                          "-T", "application/json", url], capture_output=True, text=True, check=True).stdout
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\d+)", out, re.M))
    return {"rps": float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1)),
            "p50": float(pct["50"]), "p99": float(pct["99"]), "failed": failed + (int(non2xx.group(1)) if non2xx else 0)}


def run_wrk(url: str, seconds: float, concurrency: int, script: str) -> dict:
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{int(seconds)}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout

    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    lat = dict(re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": ms(lat["50"]),
            "p99": ms(lat["99"]), "failed": int(bad.group(1)) if bad else 0, "socket_errors": bool(errors)}


async def batch_posts(url: str, batches: int, in_flight: int, round_: int) -> float:
    """POST batches of shape (a): 1,000 items, each a different job; updates/s."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    client = AsyncHTTPClient(force_instance=True, max_clients=in_flight)
    bodies = []
    for b in range(batches):
        first = (b * 1000) % JOBS
        bodies.append(orjson.dumps([{"key": f"_rest.job{(first + i) % JOBS}.stage.p{(round_ + b) % 4}.f{i % 3}",
                                     "progress": ((round_ + b) % 100) / 100, "msg": "batch", "status": "running"}
                                    for i in range(1000)]))
    queue = list(reversed(bodies))

    async def worker():
        while queue:
            response = await client.fetch(HTTPRequest(f"{url}/status", method="POST", body=queue.pop(),
                                                      request_timeout=120))
            results = orjson.loads(response.body)["results"]
            assert all(r["ok"] and r["applied"] for r in results), results[:3]

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    secs = time.perf_counter() - t0
    client.close()
    return batches * 1000 / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20_000, help="single POSTs per ab run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batches", type=int, default=40, help="batch POSTs of 1,000 items per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/out/rest.json")
    args = ap.parse_args()
    for tool in ("ab", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not on the PATH: apt-get install apache2-utils wrk")
    redis = PrivateRedis()
    bare_port, service_port = free_port(), free_port()
    bare_url, service = f"http://127.0.0.1:{bare_port}", f"http://127.0.0.1:{service_port}"
    procs = [start([sys.executable, "-m", "bench.bare", "--port", str(bare_port)], bare_url),
             start([sys.executable, "-m", "sca_progress.server.cli", "serve", "--port", str(service_port),
                    "--redis-url", redis.url, "--prefix", "restbench"], service + "/health")]
    tmp = tempfile.mkdtemp(prefix="bench-rest-")
    body_file = str(Path(tmp) / "body.json")
    Path(body_file).write_bytes(orjson.dumps(BODY))
    script = str(Path(tmp) / "post.lua")
    Path(script).write_text(WRK_SCRIPT % {"jobs": JOBS, "body": orjson.dumps(BODY).decode()})
    one = "/status/_rest.one.process.p0.f0"
    rows: dict[str, list] = {"ab_bare": [], "ab_service": [], "wrk_bare": [], "wrk_service": [],
                             "batch1": [], "batch2": [], "applied_ratio": []}
    try:
        run_ab(service + one, 500, args.concurrency, body_file)  # warm up: the tree exists, memos are set
        asyncio.run(batch_posts(service, 2, 1, 0))
        for r in range(args.repeats):
            rows["ab_bare"].append(run_ab(bare_url + one, args.requests, args.concurrency, body_file))
            before = applied(service)
            rows["ab_service"].append(run_ab(service + one, args.requests, args.concurrency, body_file))
            rows["applied_ratio"].append((applied(service) - before) / args.requests)
            rows["wrk_bare"].append(run_wrk(bare_url + "/", args.seconds, args.concurrency, script))
            rows["wrk_service"].append(run_wrk(service + "/", args.seconds, args.concurrency, script))
            rows["batch1"].append(asyncio.run(batch_posts(service, args.batches, 1, r)))
            rows["batch2"].append(asyncio.run(batch_posts(service, args.batches, 2, r)))
            print(f"  round {r + 1}: ab bare {rows['ab_bare'][-1]['rps']:,.0f}/s, service "
                  f"{rows['ab_service'][-1]['rps']:,.0f}/s; wrk bare {rows['wrk_bare'][-1]['rps']:,.0f}/s, "
                  f"service {rows['wrk_service'][-1]['rps']:,.0f}/s; batch POST {rows['batch1'][-1]:,.0f} / "
                  f"{rows['batch2'][-1]:,.0f} updates/s", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        redis.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"machine": machine(), "redis": redis.version, "args": vars(args), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows, a = result["rows"], result["args"]
    med = statistics.median

    def pair(kind: str) -> str:
        bare, svc = rows[f"{kind}_bare"], rows[f"{kind}_service"]
        ratios = ", ".join(f"{s['rps'] / b['rps']:.2f}" for b, s in zip(bare, svc))
        return (f"| {med(r['rps'] for r in bare):,.0f} | {med(r['p50'] for r in bare):.1f} / "
                f"{med(r['p99'] for r in bare):.1f} | {med(r['rps'] for r in svc):,.0f} | "
                f"{med(r['p50'] for r in svc):.1f} / {med(r['p99'] for r in svc):.1f} | "
                f"{med(s['rps'] / b['rps'] for b, s in zip(bare, svc)):.2f} ({ratios}) | "
                f"{sum(r['failed'] for r in svc)} |")

    lines = [f"Machine: {result['machine']}; Redis {result['redis']} (private); load from ab, wrk and this "
             f"process on the same machine.",
             f"Command: `python -m bench.rest --requests {a['requests']} --seconds {a['seconds']} "
             f"--concurrency {a['concurrency']} --batches {a['batches']} --repeats {a['repeats']}`", "",
             f"Single POSTs, {a['concurrency']} keep-alive clients; medians of {a['repeats']} runs, each service "
             f"run beside a bare run:", "",
             "| load | bare req/s | bare p50 / p99 ms | service req/s | service p50 / p99 ms | service / bare (runs) "
             "| failed |", "|---|---:|---:|---:|---:|---:|---:|",
             "| `ab -k`: one node " + pair("ab"),
             "| wrk: a leaf of another of 2,000 jobs each request " + pair("wrk"), "",
             f"Every single POST applied: {min(rows['applied_ratio']):.3f} updates per request (lowest run).", "",
             "| batch POST, 1,000 items a request, one update of each of 1,000 jobs | updates/s (median) | runs |",
             "|---|---:|---|",
             f"| one connection | {med(rows['batch1']):,.0f} | {', '.join(f'{x:,.0f}' for x in rows['batch1'])} |",
             f"| two connections | {med(rows['batch2']):,.0f} | {', '.join(f'{x:,.0f}' for x in rows['batch2'])} |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
