"""Is a run's queue bounded? The criterion behind `--slo stable`.

Over the second half of the arrival window (first to last arrival), fit a line to the number of
requests in the system (waiting + running, after each batch). The queue is called unbounded when that
line grows by more than 2% of the requests that arrived in that half, and by more than 20 requests.
A stable queue fluctuates around a level; an overloaded one grows in proportion to the excess rate, so
a 2% threshold resolves rates about 2% above capacity. Runs need enough requests (thousands) for the
second half to be long against the queue's fluctuations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmsched.records import RunResult

GROWTH_FRACTION = 0.02
GROWTH_MIN_REQUESTS = 20


@dataclass(frozen=True)
class Stability:
    stable: bool
    growth: float  # requests gained over the second half, by the fitted line
    arrivals: int  # requests that arrived in the second half


def queue_growth(result: RunResult) -> Stability:
    arrivals = np.array([r.arrival for r in result.requests])
    if arrivals.size < 2:
        return Stability(True, 0.0, int(arrivals.size))
    t0, t1 = float(arrivals.min()), min(float(arrivals.max()), result.end_time)
    mid = (t0 + t1) / 2
    start = np.asarray(result.batches.start)
    in_system = np.add(result.batches.waiting, result.batches.running)
    mask = (start >= mid) & (start <= t1)
    n_half = int(np.sum((arrivals >= mid) & (arrivals <= t1)))
    if mask.sum() < 10:  # too few batches in the window: nothing to fit (the system was nearly idle)
        return Stability(True, 0.0, n_half)
    slope = np.polyfit(start[mask] - mid, in_system[mask].astype(float), 1)[0]
    growth = float(slope * (t1 - mid))
    return Stability(growth <= max(GROWTH_FRACTION * n_half, GROWTH_MIN_REQUESTS), growth, n_half)
