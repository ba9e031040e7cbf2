"""Service settings: one dataclass, filled from PROGRESS_* variables and CLI flags.

Every field is a flag ``--some-name`` and a variable ``PROGRESS_SOME_NAME``;
a flag wins over the variable, the variable over the default.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "sca-progress")


@dataclass
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8080, metadata={"help": "HTTP port"})
    redis_url: str = field(default="", metadata={
        "help": "redis://, rediss:// (TLS) or unix:// URL; empty starts an embedded Redis under --data-dir"})
    prefix: str = field(default="progress", metadata={
        "help": "key prefix: keeps several deployments apart in one Redis"})
    data_dir: str = field(default_factory=_default_data_dir, metadata={
        "help": "where the embedded Redis keeps its append-only file"})
    appendfsync: str = field(default="everysec", metadata={
        "help": "embedded Redis fsync policy: always, everysec or no (see README, Durability)"})
    eta_window: float = field(default=120.0, metadata={
        "help": "seconds: time constant of the progress-rate average behind eta"})
    gc_interval: float = field(default=30.0, metadata={
        "help": "seconds between sweeps freeing the storage of deleted subtrees"})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                                help=f"{f.metadata.get('help', '')} (${_env_name(f.name)})")

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
        return cls(**values)


def _env_name(name: str) -> str:
    return "PROGRESS_" + name.upper()


def _convert(typ: str, name: str, raw: str):
    try:
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
    except ValueError:
        raise SystemExit(f"--{name.replace('_', '-')}: {raw!r} is not a {typ}") from None
    return raw
