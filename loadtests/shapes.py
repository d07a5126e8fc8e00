"""Load shapes for loadtests/locustfile.py: ``ramp`` (default) and ``step``.

Locust uses the first ``LoadTestShape`` class found in any ``-f`` file, so this module is kept
apart from the locustfile and only loaded when asked for:

    locust -f loadtests/locustfile.py,loadtests/shapes.py --headless --shape step \
        -u 200 -r 20 -t 5m --step-users 25 --step-time 30s --host http://127.0.0.1:8080

It reads the common options (``use_common_options``):

* ``ramp``: grow to ``-u`` users at ``-r`` users/s, hold, stop after ``-t``.
* ``step``: add ``--step-users`` users every ``--step-time`` (spawned at ``-r`` users/s) until
  ``-u``, hold, stop after ``-t``. Each plateau is a point of the latency-vs-load curve.

Without ``-t`` a shape runs until stopped. ``--shape`` and ``--step-*`` are registered by the
locustfile (they exist only with this module loaded alongside it).
"""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape
from shaping import parse_duration, ramp_tick, step_tick


class GatewayShape(LoadTestShape):
    """Dispatches to ``ramp_tick`` or ``step_tick`` according to ``--shape``."""

    use_common_options = True

    def _options(self) -> Any:
        assert self.runner is not None
        return self.runner.environment.parsed_options

    def tick(self) -> tuple[int, float] | None:
        options = self._options()
        users = int(options.num_users or 1)
        spawn_rate = float(options.spawn_rate or 1)
        duration = float(options.run_time) if options.run_time else None
        run_time = self.get_run_time()
        if getattr(options, "shape", "ramp") == "step":
            return step_tick(
                run_time,
                users,
                spawn_rate,
                duration,
                int(options.step_users),
                parse_duration(options.step_time),
            )
        return ramp_tick(run_time, users, spawn_rate, duration)
