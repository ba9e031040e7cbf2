"""Starting and stopping service processes for the tests."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(args: list[str], env: dict | None = None, timeout: float = 30.0):
    """Run `sca-progress serve --port 0 ARGS`; return (process, base URL, log()).

    log() returns everything the process has written to stderr so far.
    """
    full_env = {**os.environ, **(env or {})}
    if "PROGRESS_HOST" not in full_env:
        args = ["--host", "127.0.0.1", *args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sca_progress.server.cli", "serve", "--port", "0", *args],
        env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                found.set()

    proc.pump = threading.Thread(target=pump, daemon=True)
    proc.pump.start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            proc.pump.join(5)
            proc.stderr.close()
            raise RuntimeError("service did not start:\n" + "".join(lines))
    url = re.search(r"listening on (http://[^\s\"]+)", "".join(lines)).group(1)
    return proc, url, lambda: "".join(lines)


def stop_service(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (unless it has exited already), wait, and release its pipe."""
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        return proc.returncode
    finally:
        proc.pump.join(5)
        proc.stderr.close()
