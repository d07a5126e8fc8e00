"""prometheus_client multiprocess mode: one ``/metrics`` answer for all uvicorn workers.

uvicorn's workers share one listening socket, so a scrape reaches one worker at random; each
worker's own registry would report a fraction of the traffic, different on every scrape. In
multiprocess mode every worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (in any worker) sums the files of all of them.

The directory must be known before ``prometheus_client`` is imported (its value class is
chosen at import) and emptied before the first worker starts, so ``python -m gateway serve``
calls :func:`prepare` first thing. This module therefore imports nothing from
prometheus_client.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def directory() -> Path | None:
    """The multiprocess directory of this process, or None in single-process mode."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def prepare(workers: int) -> Path | None:
    """Before any worker starts: choose (or create) the directory and empty it.

    With one worker and no ``PROMETHEUS_MULTIPROC_DIR`` the process keeps an ordinary
    in-memory registry (nothing to share). With several workers and no directory set, a
    private one is created under the temp dir (``/tmp`` is writable in the chart's pods).
    Files left by an earlier run would add its counts to this one's, so they are removed.
    """
    path = directory()
    if path is None:
        if workers <= 1:
            return None
        path = Path(tempfile.mkdtemp(prefix="gw-metrics-"))
        os.environ[ENV] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path
