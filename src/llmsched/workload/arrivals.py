"""Arrival processes: Poisson (optionally capped as in the paper's runs), gamma with a burstiness knob,
and replay of a trace's `arrived_at` column."""

from __future__ import annotations

import numpy as np

from llmsched.errors import UserError

ARRIVALS = ("poisson", "poisson-capped", "gamma", "trace")


def arrival_times(
    kind: str,
    n: int,
    qps: float,
    rng: np.random.Generator,
    burstiness: float = 1.0,
    replay: list[float | None] | None = None,
) -> np.ndarray:
    """Absolute arrival times (seconds from 0) of n requests.

    poisson-capped: each gap is min(Exp(qps), 3/qps), the reference code's truncation (effective rate
    about 1.05 x qps). gamma: gaps with mean 1/qps and squared coefficient of variation `burstiness`
    (1 = Poisson, > 1 burstier). trace: the rows' `arrived_at`, shifted so the first is 0.
    """
    if kind == "trace":
        if replay is None or any(a is None for a in replay):
            raise UserError("--arrival trace needs an arrived_at column in the trace")
        times = np.asarray(replay, dtype=float)
        if np.any(np.diff(times) < 0):
            raise UserError("trace: arrived_at must not decrease from one row to the next")
        return times - times[0]
    if not qps > 0:
        raise UserError(f"--qps is {qps}, expected a positive number of requests per second")
    if kind == "poisson":
        gaps = rng.exponential(1.0 / qps, n)
    elif kind == "poisson-capped":
        gaps = np.minimum(-np.log1p(-rng.random(n)) / qps, 3.0 / qps)
    elif kind == "gamma":
        if not burstiness > 0:
            raise UserError(f"--burstiness is {burstiness}, expected a positive number")
        shape = 1.0 / burstiness
        gaps = rng.gamma(shape, 1.0 / (qps * shape), n)
    else:
        raise UserError(f"--arrival is {kind!r}, expected one of {', '.join(ARRIVALS)}")
    gaps[0] = 0.0
    return np.cumsum(gaps)
