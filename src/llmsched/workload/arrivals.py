"""Arrival processes: Poisson capped as the reference's runs (the paper setting), plain Poisson, gamma with a
burstiness knob, and replay of a trace's `arrived_at` column."""

from __future__ import annotations

import math
import random

import numpy as np

from llmsched.errors import UserError

ARRIVALS = ("poisson-capped", "poisson", "gamma", "trace")


def arrival_times(
    kind: str,
    n: int,
    qps: float,
    seed: int,
    burstiness: float = 1.0,
    replay: list[float | None] | None = None,
) -> np.ndarray:
    """Absolute arrival times (seconds from 0) of n requests.

    poisson-capped: the reference's generator (Sarathi-Serve's `poisson_request_interval_generator`), gap by gap:
    min(-ln(1 - U) / qps, 3 / qps) with U from Python's `random` seeded once with `seed`; the first request arrives
    after one gap. The cap makes the effective rate about 1.05 x qps. poisson: exponential gaps, the first request
    at 0. gamma: gaps with mean 1/qps and squared coefficient of variation `burstiness` (1 = Poisson, > 1
    burstier), the first at 0. trace: the rows' `arrived_at`, shifted so the first is 0.
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
    if kind == "poisson-capped":
        draw, cap = random.Random(seed).random, 3.0 / qps
        return np.cumsum([min(-math.log(1.0 - draw()) / qps, cap) for _ in range(n)])
    rng = np.random.default_rng((seed, 1))  # a stream of its own: tiers use default_rng(seed), as the reference
    if kind == "poisson":
        gaps = rng.exponential(1.0 / qps, n)
    elif kind == "gamma":
        if not burstiness > 0:
            raise UserError(f"--burstiness is {burstiness}, expected a positive number")
        shape = 1.0 / burstiness
        gaps = rng.gamma(shape, 1.0 / (qps * shape), n)
    else:
        raise UserError(f"--arrival is {kind!r}, expected one of {', '.join(ARRIVALS)}")
    gaps[0] = 0.0
    return np.cumsum(gaps)
