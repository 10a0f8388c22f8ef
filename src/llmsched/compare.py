"""Run a grid of policies x QPS and collect what the report plots: summaries for every run, and at one
QPS the TTFT/ITL distributions and the mean TTFT per prompt-length bucket."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from llmsched.errors import UserError
from llmsched.executor import Executor
from llmsched.experiment import RunSpec, run, validate
from llmsched.sim.engine import RunResult
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


def parse_grid(text: str) -> list[float]:
    """ "0.2:2.0:0.2" (start:stop:step, stop included) or "0.5,1,1.5"."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            values = list(np.round(np.arange(start, stop + step / 2, step), 6))
        else:
            values = [float(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--qps is {text!r}, expected start:stop:step or a comma list of rates") from None
    if not values or any(not v > 0 for v in values):
        raise UserError(f"--qps is {text!r}: every rate must be positive")
    return [float(v) for v in values]


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


def run_point(spec: RunSpec, detailed: bool) -> tuple[dict, Detail | None]:
    result, summary = run(spec)
    return summary, details_of(result, spec.policy, spec.workload.qps) if detailed else None


def run_grid(
    specs: list[RunSpec], qps: list[float], executor: Executor, detail_qps: float | None = None, progress: bool = True
) -> tuple[list[dict], list[Detail]]:
    for spec in specs:
        validate(spec)
    detail_qps = qps[len(qps) // 2] if detail_qps is None else detail_qps
    grid = sorted(set(qps) | {detail_qps})
    jobs = [(spec.at_qps(q), q == detail_qps) for spec in specs for q in grid]
    with tqdm(total=len(jobs), desc="runs", unit="run", disable=not progress, leave=False) as bar:
        results = executor.map(run_point, jobs, bar)
    return [s for s, _ in results], [d for _, d in results if d is not None]


def flatten(summary: dict) -> dict:
    """One CSV row: the scalar metrics, plus per-tier ones prefixed by the tier's name."""
    row = {k: v for k, v in summary.items() if not isinstance(v, dict | list)}
    for name, tier in summary.get("tiers", {}).items():
        row.update({f"{name}.{k}": v for k, v in tier.items() if not isinstance(v, dict)})
    return row
