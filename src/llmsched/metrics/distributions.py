"""Distributions of one run, small enough to send back from a worker: TTFT and ITL quantiles (overall and per
tier) and the mean TTFT per prompt-length bucket, as the reference's plots show them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmsched.records import RunResult
from llmsched.workload.request import FINISHED

BUCKET = 512  # prompt-length bucket width (tokens), as the reference's TTFT-vs-prompt-length plots
QUANTILES = np.linspace(0, 1, 201)


@dataclass(frozen=True)
class Detail:
    """Distributions of one run, small enough to send back from a worker."""

    policy: str
    qps: float
    ttft_quantiles_ms: dict[str, list[float]]  # per tier and "all"
    itl_quantiles_ms: dict[str, list[float]]
    bucket_starts: list[int]
    bucket_mean_ttft_ms: list[float | None]
    bucket_completed: list[int]
    bucket_unfinished: list[int]


def details_of(result: RunResult, policy: str, qps: float) -> Detail:
    done = [r for r in result.requests if r.state == FINISHED]
    tiers = sorted({r.tier for r in result.requests})

    def q(values: list[float]) -> list[float]:
        return [float(v) for v in np.quantile(np.array(values) * 1e3, QUANTILES)] if values else []

    ttft: dict[str, list[float]] = {}
    itl: dict[str, list[float]] = {}
    for name in ["all", *tiers] if len(tiers) > 1 else ["all"]:
        group = [r for r in done if name == "all" or r.tier == name]
        ttft[name] = q([r.token_times[0] - r.arrival for r in group])
        gaps = [np.diff(r.token_times) for r in group if len(r.token_times) > 1]
        itl[name] = q(list(np.concatenate(gaps))) if gaps else []
    longest = max((r.prompt_len for r in result.requests), default=0)
    starts = list(range(0, longest + 1, BUCKET))
    sums, done_n, left_n = np.zeros(len(starts)), np.zeros(len(starts), int), np.zeros(len(starts), int)
    for r in result.requests:
        b = min((r.prompt_len - 1) // BUCKET, len(starts) - 1)
        if r.state == FINISHED:
            sums[b] += r.token_times[0] - r.arrival
            done_n[b] += 1
        else:
            left_n[b] += 1
    means = [float(s / n * 1e3) if n else None for s, n in zip(sums, done_n, strict=True)]
    return Detail(policy, qps, ttft, itl, starts, means, [int(x) for x in done_n], [int(x) for x in left_n])
