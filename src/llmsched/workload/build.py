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
    arrival: str = "poisson"
    burstiness: float = 1.0
    tiers: str | None = None
    seed: int = 42
    shuffle: bool = True


def build_requests(
    cfg: WorkloadConfig, max_model_len: int | None = None, rows: list[TraceRow] | None = None
) -> tuple[list[Request], list[SLOTier]]:
    """Requests sorted by arrival. Rows are shuffled with the seed (as the reference's seed-42 sampling),
    then the first `num_requests` are taken; each request's tier is drawn with the tiers' shares."""
    tiers = parse_tiers(cfg.tiers)
    if rows is None:
        rows = load_trace(cfg.trace, max_model_len)
    if cfg.num_requests is not None and cfg.num_requests <= 0:
        raise UserError(f"--num-requests is {cfg.num_requests}, expected a positive integer")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(rows)) if cfg.shuffle and cfg.arrival != "trace" else np.arange(len(rows))
    n = len(rows) if cfg.num_requests is None else cfg.num_requests
    if n > len(rows):  # sample with replacement beyond the trace's length, still seeded
        order = np.concatenate([order, rng.integers(0, len(rows), n - len(rows))])
    picked = [rows[i] for i in order[:n]]
    times = arrival_times(cfg.arrival, n, cfg.qps, rng, cfg.burstiness, [r.arrived_at for r in picked])
    tier_idx = rng.choice(len(tiers), size=n, p=[t.share for t in tiers])
    requests = [
        Request(i, float(times[i]), row.prompt_len, row.decode_len, tiers[k].name, tiers[k].tbt, tiers[k].priority)
        for i, (row, k) in enumerate(zip(picked, tier_idx, strict=True))
    ]
    return requests, tiers
