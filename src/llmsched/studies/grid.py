"""Run a grid of policies x QPS and collect what the report plots: summaries for every run, and at one
QPS the TTFT/ITL distributions and the mean TTFT per prompt-length bucket."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from llmsched.errors import UserError
from llmsched.metrics import Detail, details_of
from llmsched.studies.executor import Executor
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec, validate


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


def flatten(summary: dict, settings: dict | None = None) -> dict:
    """One CSV row: the run's settings (studies/metadata.settings), the scalar metrics, per-tier ones prefixed
    by the tier's name and per-replica ones by `replicaN.`."""
    row = {**(settings or {}), **{k: v for k, v in summary.items() if not isinstance(v, dict | list)}}
    for name, tier in summary.get("tiers", {}).items():
        row.update({f"{name}.{k}": v for k, v in tier.items() if not isinstance(v, dict)})
    for rep in summary.get("replicas", []):
        row.update({f"replica{rep['replica']}.{k}": v for k, v in rep.items() if k != "replica"})
    return row
