"""Turn a trace, an arrival process and SLO tiers into the requests of one run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmsched.errors import UserError
from llmsched.workload.arrivals import arrival_times
from llmsched.workload.request import Request
from llmsched.workload.tiers import SLOTier, parse_tiers
from llmsched.workload.trace import TraceRow, load_trace


@dataclass(frozen=True)
class WorkloadConfig:
    trace: str | None = None  # a built-in trace's name or a CSV path; None: the paper's trace
    num_requests: int | None = None  # None: every row
    qps: float = 1.0
    arrival: str = "poisson-capped"  # the reference's
    burstiness: float = 1.0
    tiers: str | None = None
    seed: int = 42
    shuffle: bool = True


def reference_order(n: int, seed: int) -> np.ndarray:
    """The reference loader's shuffle of a trace's rows: pandas `df.sample(frac=1, random_state=seed)`, which is
    numpy's legacy `RandomState(seed).permutation(n)`."""
    return np.random.RandomState(seed).permutation(n)


def reference_tiers(tiers: list[SLOTier], n: int, seed: int) -> np.ndarray:
    """Each request's tier index, as the reference draws it (the paper authors' `synthetic_request_generator`): one
    `default_rng(seed).random()` per request in arrival order, strict (the first tier) when below its share; with
    more tiers, the tier whose cumulative share first exceeds the draw."""
    u = np.random.default_rng(seed).random(n)
    return np.minimum(np.searchsorted(np.cumsum([t.share for t in tiers]), u, side="right"), len(tiers) - 1)


def build_requests(
    cfg: WorkloadConfig, max_model_len: int | None = None, rows: list[TraceRow] | None = None
) -> tuple[list[Request], list[SLOTier]]:
    """Requests sorted by arrival. Rows are shuffled as the reference's loader does (`reference_order`), then the
    first `num_requests` are taken; arrivals follow `cfg.arrival`; tiers are drawn as the reference does."""
    tiers = parse_tiers(cfg.tiers)
    if rows is None:
        rows = load_trace(cfg.trace, max_model_len)
    if cfg.num_requests is not None and cfg.num_requests <= 0:
        raise UserError(f"--num-requests is {cfg.num_requests}, expected a positive integer")
    shuffle = cfg.shuffle and cfg.arrival != "trace"
    order = reference_order(len(rows), cfg.seed) if shuffle else np.arange(len(rows))
    n = len(rows) if cfg.num_requests is None else cfg.num_requests
    if n > len(rows):  # sample with replacement beyond the trace's length, still seeded
        extra = np.random.default_rng((cfg.seed, 2)).integers(0, len(rows), n - len(rows))
        order = np.concatenate([order, extra])
    picked = [rows[i] for i in order[:n]]
    times = arrival_times(cfg.arrival, n, cfg.qps, cfg.seed, cfg.burstiness, [r.arrived_at for r in picked])
    tier_idx = reference_tiers(tiers, n, cfg.seed)
    requests = [
        Request(i, float(times[i]), row.prompt_len, row.decode_len, tiers[k].name, tiers[k].tbt, tiers[k].priority)
        for i, (row, k) in enumerate(zip(picked, tier_idx, strict=True))
    ]
    return requests, tiers
