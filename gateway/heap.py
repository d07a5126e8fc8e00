"""Keep the garbage collector's full passes off the request path.

After start-up a gateway process holds ~100k objects (FastAPI, pydantic, grpc, numpy, the
specs, the clients). They are young to the collector, so the first full (generation 2)
collection under load walks every one of them while every request in the process waits:
50-70 ms on the benchmark machine, once per worker, which was the miss path's p99 at a
moderate rate (docs/measurements.md). Collecting once at start-up and then freezing what
survived (:func:`gc.freeze`) moves those objects out of the collector's sight for good, so
later collections walk only what serving has created since.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect, then freeze every surviving object; returns how many are frozen.

    Call it once the process is ready to serve: what it allocates later stays collectable.
    Frozen objects are still freed by reference counting; only a reference cycle among
    them would outlive its last use, and start-up state lives as long as the process.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
