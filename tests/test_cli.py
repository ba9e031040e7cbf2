"""`sca-progress serve` as a real process: embedded Redis, persistence, settings, TLS, SIGTERM."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from sca_progress.server.settings import Settings

from .conftest import RUN_PREFIX
from .procs import free_port, start_service, stop_service


def request(method, url, body=None):
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read() or b"null")


def test_serve_with_embedded_redis_keeps_trees_across_restarts(tmp_path):
    data = tmp_path / "data"
    proc, base, log = start_service(["--data-dir", str(data)])
    try:
        assert "embedded Redis" in log()
        assert request("POST", f"{base}/status/_cli.job1.a", {"progress": 0.25, "msg": "kept"})[0] == 200
    finally:
        assert stop_service(proc) == 0  # SIGTERM: a clean stop
    assert (data / "appendonly.aof").exists() or (data / "appendonlydir").exists()
    proc, base, _ = start_service(["--data-dir", str(data)])
    try:
        status, node = request("GET", f"{base}/status/_cli.job1?depth=2")
        assert status == 200 and node["progress"] == 0.25 and node["tasks"][0]["msg"] == "kept"
    finally:
        stop_service(proc)


def test_settings_from_environment_and_flags(tmp_path, redis_url):
    env = {"PROGRESS_REDIS_URL": redis_url, "PROGRESS_PREFIX": f"{RUN_PREFIX}-cli-env-{os.urandom(4).hex()}"}
    proc, base, _ = start_service([], env=env)
    try:
        assert request("POST", f"{base}/status/_cli.env.a", {"progress": 1})[0] == 200
    finally:
        stop_service(proc)
    # A flag wins over its variable: another prefix sees nothing.
    proc, base, _ = start_service(["--prefix", env["PROGRESS_PREFIX"] + "-other"], env=env)
    try:
        assert request("GET", f"{base}/status/_cli.env")[0] == 404
    finally:
        stop_service(proc)


def test_settings_defaults_and_bad_values():
    s = Settings.load(None, environ={"PROGRESS_PORT": "9000", "PROGRESS_ETA_WINDOW": "30"})
    assert s.port == 9000 and s.eta_window == 30.0 and s.host == "127.0.0.1" and s.redis_url == ""
    with pytest.raises(SystemExit):
        Settings.load(None, environ={"PROGRESS_PORT": "eighty"})


def test_help_lists_every_setting():
    out = subprocess.run([sys.executable, "-m", "sca_progress.server.cli", "serve", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("--host", "--port", "--redis-url", "--prefix", "--data-dir", "--appendfsync", "$PROGRESS_PORT"):
        assert name in out


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs a redis-server on the PATH")
def test_rediss_url(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--tls-cert-file", str(tmp_path / "cert.pem"),
         "--tls-key-file", str(tmp_path / "key.pem"), "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
         "--tls-auth-clients", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        if redis.poll() is not None:
            pytest.skip("this redis-server was built without TLS")
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
        proc, base, _ = start_service(["--redis-url", url])
        try:
            assert request("POST", f"{base}/status/_tls.j.a", {"progress": 0.5})[0] == 200
            assert request("GET", f"{base}/status/_tls.j")[1]["progress"] == 0.5
        finally:
            stop_service(proc)
    finally:
        redis.terminate()
        redis.wait()


def test_sigterm_stops_cleanly(tmp_path, redis_url):
    proc, base, log = start_service(["--redis-url", redis_url, "--prefix", f"{RUN_PREFIX}-cli-term-{os.urandom(4).hex()}"])
    assert request("POST", f"{base}/status/_t.j.a", {"progress": 1})[0] == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    stop_service(proc)
    assert re.search(r"stopping", log())


def test_a_second_service_on_the_same_data_dir_refuses_and_touches_nothing(tmp_path):
    """The README's `serve --demo` typed while `serve` runs: the second process
    exits at once with one line naming the first, and the first keeps serving."""
    data = tmp_path / "data"
    proc, base, _ = start_service(["--data-dir", str(data)])
    try:
        before = sorted(p.name for p in data.iterdir())
        second = subprocess.run([sys.executable, "-m", "sca_progress.server.cli", "serve", "--port", "0",
                                 "--host", "127.0.0.1", "--data-dir", str(data), "--demo"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        errors = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and f"pid {proc.pid}, {base}" in errors[0] and "--data-dir" in errors[0], errors
        assert sorted(p.name for p in data.iterdir()) == before
        for i in range(40):  # the first one still answers every request
            assert request("POST", f"{base}/status/_dd.j.a", {"progress": i / 40})[0] == 200
    finally:
        assert stop_service(proc) == 0


async def test_posts_answered_before_a_sigterm_are_all_kept(redis_url, engine, prefix):
    """Clients post steadily while the server is told to stop: every update
    it answered 200 is stored, and the stop logs no failure."""
    import asyncio

    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    proc, base, log = start_service(["--redis-url", redis_url, "--prefix", prefix])
    client = AsyncHTTPClient()
    acked: dict[str, float] = {}

    async def job(n: int) -> None:
        key = f"_stop.job{n}.a"
        for i in range(1, 100_000):
            req = HTTPRequest(f"{base}/status/{key}", method="POST", body=orjson.dumps({"progress": i / 100_000}),
                              request_timeout=10)
            try:
                resp = await client.fetch(req, raise_error=False)
            except Exception:
                return
            if resp.code != 200:
                return
            acked[key] = i / 100_000

    jobs = [asyncio.ensure_future(job(n)) for n in range(8)]
    await asyncio.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*jobs), 30)
    await asyncio.get_running_loop().run_in_executor(None, proc.wait, 30)
    assert stop_service(proc) == 0  # it has stopped, cleanly: this lets its pipe go
    assert "uncaught" not in log() and "Traceback" not in log(), log()
    assert len(acked) == 8 and all(p > 0 for p in acked.values())
    for key, p in acked.items():
        node = await engine.read(key)
        assert node["progress"] >= p, (key, node["progress"], p)
