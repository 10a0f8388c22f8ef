"""Turn a trace, an arrival process and SLO tiers into the requests of one run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmsched.errors import UserError
from llmsched.workload.arrivals import arrival_times
from llmsched.workload.formats import load_rows
from llmsched.workload.request import REJECTED, Request
from llmsched.workload.tiers import SLOTier, parse_tiers
from llmsched.workload.trace import TraceRow, has_arrivals


@dataclass(frozen=True)
class WorkloadConfig:
    trace: str | None = None  # a built-in trace's name or a CSV path; None: the paper's trace
    num_requests: int | None = None  # None: every row
    qps: float = 1.0
    arrival: str | None = None  # None: `trace` for a trace with arrived_at, else poisson-capped (the reference's)
    rate_scale: float = 1.0  # replayed arrivals run this many times faster
    burstiness: float = 1.0
    tiers: str | None = None
    seed: int = 42
    shuffle: bool = True
    num_sessions: int | None = None  # --trace sessions: sessions (None: every one in the file)
    think_time: float | None = None  # --trace sessions: mean seconds between an answer and the next turn
    answers: str = "recorded"  # --trace sessions: what the next turn's prompt holds (workload.sessions.ANSWERS)
    system_prompts: str | None = None  # "K:L:FRACTION", see workload.system_prompts
    prefix_block: int = 16  # tokens per prefix id the generators (sessions, system prompts) give


def resolved_arrival(cfg: WorkloadConfig, rows: list[TraceRow] | None = None) -> str:
    """`cfg.arrival`, or by default `trace` for a trace with an arrived_at column (its arrivals replayed), else
    poisson-capped (the reference's)."""
    if cfg.arrival:
        return cfg.arrival
    timed = rows[0].arrived_at is not None if rows else has_arrivals(cfg.trace)
    return "trace" if timed else "poisson-capped"


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
    first `num_requests` are taken; arrivals follow `cfg.arrival` (by default the trace's `arrived_at` when it has
    that column, `--rate-scale` times faster); tiers are drawn as the reference does. A trace with prefix ids (a
    Mooncake trace, whose sharing follows its order) keeps its order. With `max_model_len`, requests longer than it
    are rejected (`reject_over_length`)."""
    tiers = parse_tiers(cfg.tiers)
    if rows is None:
        rows = load_rows(cfg.trace)
    arrival = resolved_arrival(cfg, rows)
    check_rate_scale(cfg, arrival)
    if cfg.num_requests is not None and cfg.num_requests <= 0:
        raise UserError(f"--num-requests is {cfg.num_requests}, expected a positive integer")
    shuffle = cfg.shuffle and arrival != "trace" and not rows[0].prefix_ids
    order = reference_order(len(rows), cfg.seed) if shuffle else np.arange(len(rows))
    n = len(rows) if cfg.num_requests is None else cfg.num_requests
    if n > len(rows):  # sample with replacement beyond the trace's length, still seeded
        extra = np.random.default_rng((cfg.seed, 2)).integers(0, len(rows), n - len(rows))
        order = np.concatenate([order, extra])
    picked = [rows[i] for i in order[:n]]
    times = arrival_times(arrival, n, cfg.qps, cfg.seed, cfg.burstiness, [r.arrived_at for r in picked])
    if arrival == "trace":
        times = times / cfg.rate_scale
    tier_idx = reference_tiers(tiers, n, cfg.seed)
    requests = [
        Request(
            i,
            float(times[i]),
            row.prompt_len,
            row.decode_len,
            tiers[k].name,
            tiers[k].tbt,
            tiers[k].priority,
            row.prefix_ids,
            row.prefix_block,
        )
        for i, (row, k) in enumerate(zip(picked, tier_idx, strict=True))
    ]
    if max_model_len is not None:
        reject_over_length(requests, max_model_len)
    return requests, tiers


def check_rate_scale(cfg: WorkloadConfig, arrival: str) -> None:
    """--rate-scale scales replayed arrivals only."""
    if not cfg.rate_scale > 0:
        raise UserError(f"--rate-scale is {cfg.rate_scale}, expected a positive factor")
    if cfg.rate_scale != 1.0 and arrival != "trace":
        raise UserError(f"--rate-scale scales replayed arrivals; with --arrival {arrival} set the rate by --qps")


def reject_over_length(requests: list[Request], max_model_len: int) -> int:
    """Mark each request whose prompt and output exceed the model's context rejected, with the reason, as vLLM's
    server answers such a request on arrival (the engines skip them; metrics count them). Returns how many."""
    rejected = 0
    for r in requests:
        if r.prompt_len + r.decode_len > max_model_len:
            r.state = REJECTED
            r.reason = f"prompt + output of {r.prompt_len + r.decode_len} tokens exceeds max_model_len {max_model_len}"
            rejected += 1
    return rejected
