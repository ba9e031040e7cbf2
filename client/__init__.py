"""Clients of the progress service: what job scripts and people at a terminal use.

    from sca_progress.client import Reporter, track

    with Reporter("_portal.job123") as job:     # $SCA_PROGRESS_URL, $SCA_PROGRESS_TOKEN
        job.children(["stage_input", "run", "output"], weight={"stage_input": 10, "run": 100, "output": 2})
        for f in track(files, reporter=job.child("stage_input")):
            stage(f)

``Reporter`` blocks only in flush()/close(); ``AsyncReporter`` is its asyncio
twin.  See reporter.py.
"""
from .errors import ReporterError, ReporterWarning
from .reporter import UNSET, AsyncReporter, Reporter, track

__all__ = ["UNSET", "AsyncReporter", "Reporter", "ReporterError", "ReporterWarning", "track"]
