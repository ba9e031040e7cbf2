"""Clients of the progress service: what job scripts and people at a terminal use.

    from sca_progress.client import Reporter, track

    with Reporter("_portal.job123") as job:     # $SCA_PROGRESS_URL, $SCA_PROGRESS_TOKEN
        job.children(["stage_input", "run", "output"], weight={"stage_input": 10, "run": 100, "output": 2})
        for f in track(files, reporter=job.child("stage_input")):
            stage(f)

``Reporter`` blocks only in flush()/close(); ``AsyncReporter`` is its asyncio
twin.  See reporter.py.  The reporters (and asyncio with them) are imported
when first named, so that the commands (``sca-progress watch``, …), which
live in this package too, start without them.
"""
from .errors import ReporterError, ReporterWarning

__all__ = ["UNSET", "AsyncReporter", "Reporter", "ReporterError", "ReporterWarning", "track"]
_FROM_REPORTER = {"UNSET", "AsyncReporter", "Reporter", "track"}


def __getattr__(name: str):
    if name in _FROM_REPORTER:
        from . import reporter

        return getattr(reporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _FROM_REPORTER)
