"""Service settings: one dataclass, filled from PROGRESS_* variables and CLI flags.

Every field is a flag ``--some-name`` and a variable ``PROGRESS_SOME_NAME``;
a flag wins over the variable, the variable over the default.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "sca-progress")


#: Exit status of a server that cannot start as configured (a port in use, a
#: contradicting flag): the --workers supervisor stops instead of restarting it.
CANNOT_START = 3

@dataclass
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"min": 0, "max": 65535, "help": "HTTP port"})
    metrics_port: int = field(default=0, metadata={"min": 0, "max": 65535,
        "help": "also serve GET /metrics of this process alone on this port (worker i of --workers: "
                "this port + i), for Prometheus to scrape each process; 0: off"})
    redis_url: str = field(default="", metadata={
        "help": "redis://, rediss:// (TLS) or unix:// URL; empty starts an embedded Redis under --data-dir"})
    redis_cluster: str = field(default="auto", metadata={"choices": ("auto", "yes", "no"),
        "help": "whether --redis-url is a Redis Cluster node; auto: ask it (INFO cluster)"})
    prefix: str = field(default="progress", metadata={
        "help": "key prefix: keeps several deployments apart in one Redis"})
    data_dir: str = field(default_factory=_default_data_dir, metadata={
        "help": "where the embedded Redis keeps its append-only file"})
    appendfsync: str = field(default="everysec", metadata={
        "help": "embedded Redis fsync policy: always, everysec or no (see docs/operations.md, Durability)"})
    eta_window: float = field(default=120.0, metadata={"min": 0, 
        "help": "seconds: time constant of the progress-rate average behind eta"})
    history_samples: int = field(default=64, metadata={"min": 0, "max": 65535,
        "help": "most progress-history samples a node keeps (?history=1, GET /status/<key>/history); "
                "the step between them doubles as the node ages, so they span its whole life; 0: no history "
                "(a full history is ~253 B of Redis memory a node: docs/storage.md)"})
    history_step: float = field(default=1.0, metadata={"min": 0.001,
        "help": "seconds: the finest step between history samples (a node's first ones)"})
    stall_after: float = field(default=600.0, metadata={"min": 0, 
        "help": "seconds: a running node unchanged for this long is stalled (_stalled, ?stalled=1, the "
                "stalled notice); 0: never"})
    long_running_after: float = field(default=3600.0, metadata={"min": 0, 
        "help": "seconds: a job root still unfinished this long after it started gets a long-running "
                "notice on the events exchange; 0: never"})
    long_running_every: float = field(default=86400.0, metadata={"min": 0, 
        "help": "seconds between the long-running notices of one job"})
    lifecycle_interval: float = field(default=30.0, metadata={"min": 0, 
        "help": "seconds between sweeps for stalled, recovered and long-running job roots"})
    gc_interval: float = field(default=30.0, metadata={"min": 0, 
        "help": "seconds between sweeps freeing the storage of deleted subtrees"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})
    log_format: str = field(default="text", metadata={"choices": ("text", "json"),
        "help": "text: one readable line per event; json: one JSON object per line (access lines with "
                "request_id, route, status, duration_ms)"})
    access_log: str = field(default="errors", metadata={"choices": ("all", "errors", "off"),
        "help": "all: log every request; errors: answers of 400 and up and requests slower than 1 s; off"})
    feed_tick: float = field(default=0.1, metadata={"min": 0, 
        "help": "seconds over which live-feed updates are coalesced per subscription"})
    jwt_secret: str = field(default="", metadata={
        "help": "HS256 secret: turns bearer-token auth on (see docs/operations.md, Security)"})
    jwt_public_key: str = field(default="", metadata={
        "help": "PEM file of an RS256 or ES256 public key: turns bearer-token auth on"})
    jwt_issuer: str = field(default="", metadata={"help": "required iss claim, if set"})
    jwt_audience: str = field(default="", metadata={"help": "required aud claim, if set"})
    max_nodes_per_tree: int = field(default=1_000_000, metadata={
        "help": "most nodes one tree may hold; 0: no cap"})
    rate_limit: int = field(default=20_000, metadata={
        "help": "most updates per second one token may write over REST (auth on); 0: no limit"})
    retention_days: float = field(default=30.0, metadata={"min": 0, 
        "help": "trees not updated for this many days are purged; 0: never"})
    retention_finished_days: float = field(default=7.0, metadata={"min": 0, 
        "help": "the same for trees whose root status is finished"})
    retention_interval: float = field(default=600.0, metadata={"min": 0, "help": "seconds between retention sweeps"})
    cors_origins: str = field(default="", metadata={
        "help": "comma-separated origins allowed to call the API and socket.io from other sites; "
                "empty: same origin only"})
    amqp_url: str = field(default="", metadata={
        "help": "amqp:// or amqps:// URL of the broker to consume from; empty: REST and live feeds only"})
    amqp_exchange: str = field(default="progress", metadata={"help": "topic exchange producers publish to"})
    amqp_queue: str = field(default="progress", metadata={"help": "durable queue the service consumes"})
    amqp_binding: str = field(default="#", metadata={"help": "binding key of that queue"})
    amqp_partitions: int = field(default=0, metadata={"min": 0, "max": 1024,
        "help": "split the intake into this many single-active-consumer queues behind a consistent-hash "
                "exchange, so several processes share it in per-node order; 0: one queue ("
                "16 with --workers above 1)"})
    workers: str = field(default="1", metadata={
        "help": "server processes sharing the HTTP port (each with its own Redis and AMQP connections); "
                "auto: one per CPU"})
    amqp_dead: str = field(default="progress.dead", metadata={
        "help": "exchange and queue for refused messages (reason in the x-progress-* headers)"})
    amqp_events: str = field(default="progress.events", metadata={
        "help": "topic exchange for completion events; empty: no events"})
    batch_size: int = field(default=2000, metadata={"help": "most deliveries applied in one engine call"})
    batch_wait: float = field(default=0.05, metadata={"min": 0, 
        "help": "seconds a batch waits to fill up after its first delivery"})
    prefetch: int = field(default=0, metadata={"help": "unacknowledged deliveries in hand; 0: twice batch-size"})
    max_redeliveries: int = field(default=5, metadata={
        "help": "times a message that keeps failing is retried before it is dead-lettered"})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            default = f.default_factory() if f.default is MISSING else f.default
            shown = f"default {default}; " if default not in ("", None) else ""
            # argparse expands %-formats in help: a literal % is written %%.
            text = f"{f.metadata.get('help', '')} ({shown}${_env_name(f.name)})".replace("%", "%%")
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, help=text)

    @classmethod
    def load(cls, args: argparse.Namespace | None = None, environ=os.environ) -> "Settings":
        """Defaults, overridden by PROGRESS_* variables, overridden by flags."""
        values = {}
        for f in fields(cls):
            raw = getattr(args, f.name, None) if args is not None else None
            if raw is None:
                raw = environ.get(_env_name(f.name))
            if raw is None:
                continue
            values[f.name] = _convert(f.type, f.name, raw)
            choices = f.metadata.get("choices")
            if choices and values[f.name] not in choices:
                raise SystemExit(f"--{f.name.replace('_', '-')}: {raw!r} is not one of {', '.join(choices)}")
            low, high = f.metadata.get("min"), f.metadata.get("max")
            if (low is not None and values[f.name] < low) or (high is not None and values[f.name] > high):
                bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
                raise SystemExit(f"--{f.name.replace('_', '-')}: {raw!r} is not {bounds}")
        return cls(**values)


def _env_name(name: str) -> str:
    return "PROGRESS_" + name.upper()


def _convert(typ: str, name: str, raw: str):
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            value = float(raw)
            if not math.isfinite(value):  # nan, inf: no setting means either
                raise ValueError(raw)
            return value
    except ValueError:
        raise SystemExit(f"--{name.replace('_', '-')}: {raw!r} is not {'an integer' if typ == 'int' else 'a number'}") from None
    return raw
