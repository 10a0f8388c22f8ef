"""The stability test's verdict and whether a run is long enough for it to decide (metrics/stability.py)."""

import numpy as np

from llmsched.metrics.stability import GROWTH_FRACTION, GROWTH_MIN_REQUESTS, queue_growth
from llmsched.records import BatchLog, RunResult
from llmsched.workload.request import Request


def result_of(arrivals, batch_starts, in_system):
    log = BatchLog()
    log.start = list(batch_starts)
    log.waiting = [int(n) for n in in_system]
    log.running = [0] * len(log.start)
    requests = [Request(i, float(t), 10, 2) for i, t in enumerate(arrivals)]
    return RunResult(requests, log, 1000, float(batch_starts[-1]))


def ar1(rng, n, level, scale, keep):
    """A queue that wanders about `level`: each step keeps `keep` of its deviation."""
    x, out = 0.0, []
    for _ in range(n):
        x = keep * x + rng.normal(0, scale)
        out.append(max(0.0, level + x))
    return np.round(out)


def test_a_short_run_with_a_wandering_queue_cannot_decide():
    rng = np.random.default_rng(1)
    arrivals = np.sort(rng.uniform(0, 1000, 1000))  # 500 arrivals in the second half: the 20-request floor binds
    starts = np.arange(0.0, 1000.0, 0.1)
    s = queue_growth(result_of(arrivals, starts, ar1(rng, starts.size, 40, 3, 0.999)))
    assert s.limit == GROWTH_MIN_REQUESTS
    # at least the arrivals at which the 2% threshold takes over from the floor
    assert s.requests_needed is not None and s.requests_needed >= GROWTH_MIN_REQUESTS / GROWTH_FRACTION * 2


def test_a_long_quiet_run_decides():
    rng = np.random.default_rng(2)
    arrivals = np.sort(rng.uniform(0, 1000, 10000))
    starts = np.arange(0.0, 1000.0, 0.1)
    s = queue_growth(result_of(arrivals, starts, ar1(rng, starts.size, 40, 2, 0.9)))
    assert s.stable and s.requests_needed is None and s.growth_se < s.limit / 3


def test_a_queue_growing_far_beyond_the_threshold_decides_even_in_a_short_run():
    rng = np.random.default_rng(3)
    arrivals = np.sort(rng.uniform(0, 1000, 1000))
    starts = np.arange(0.0, 1000.0, 0.1)
    queue = ar1(rng, starts.size, 40, 3, 0.999) + starts * 0.5  # +250 requests over the second half
    s = queue_growth(result_of(arrivals, starts, queue))
    assert not s.stable and s.requests_needed is None


def test_sarathi_at_1500_requests_is_too_short_to_tell():
    """The paper's trace at 1.4 QPS, below Sarathi's capacity: 1,500 requests cannot tell, 4,000 can."""
    from llmsched.studies.run import run
    from llmsched.studies.spec import RunSpec
    from llmsched.workload import WorkloadConfig

    short, _ = run(RunSpec(workload=WorkloadConfig(num_requests=1500, qps=1.4)))
    s = queue_growth(short)
    assert s.requests_needed is not None and s.requests_needed > 1500
    long, _ = run(RunSpec(workload=WorkloadConfig(num_requests=4000, qps=1.4)))
    s = queue_growth(long)
    assert s.stable and s.requests_needed is None
