"""Capacity search: the highest QPS at which a policy's run meets an SLO.

Protocol (documented in docs/capacity.md):
- Start: the bracket [0, start_qps] (default 2.0, the reference's start_qps); while the top passes, the
  bracket doubles (up to `max_qps`).
- Each round evaluates k QPS points evenly inside the bracket in parallel (k = workers shared among the
  policies still searching), then narrows the bracket to (highest pass below the lowest fail, lowest
  fail). Passing is assumed monotone in QPS; a noisy non-monotone point is resolved in favour of the
  lower failure.
- Stop: when the bracket is narrower than `granularity` x its top (default 2.5%, as Sarathi-Serve's
  search) or after `max_rounds`. The capacity is the highest QPS that passed (0 if none did).
Runs execute on a process pool (all cores) or on Ray (see `studies/executor.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tqdm import tqdm

from llmsched.errors import UserError
from llmsched.metrics.stability import queue_growth
from llmsched.studies.executor import Executor
from llmsched.studies.run import run
from llmsched.studies.slo import SLO
from llmsched.studies.spec import RunSpec, validate


@dataclass(frozen=True)
class Point:
    qps: float
    passed: bool
    reason: str
    summary: dict
    growth: float
    stable: bool


@dataclass
class Search:
    policy: str
    spec: RunSpec
    lo: float = 0.0
    hi: float = 2.0
    hi_failed: bool = False
    points: list[Point] = field(default_factory=list)
    done: bool = False

    @property
    def best(self) -> Point | None:
        """The run at the capacity: the highest passing QPS below the lowest failure."""
        return max((p for p in self.points if p.passed and p.qps <= self.hi), key=lambda p: p.qps, default=None)

    @property
    def capacity(self) -> float:
        return self.best.qps if self.best else 0.0


def evaluate(spec: RunSpec, slo: SLO) -> Point:
    """One run at one QPS, checked against the SLO (executed in a worker)."""
    result, summary = run(spec)
    stab = queue_growth(result)
    summary["queue_growth"] = stab.growth
    passed, reason = slo.check(summary, stab.stable)
    return Point(spec.workload.qps, passed, reason, summary, stab.growth, stab.stable)


def search(
    specs: Iterable[RunSpec],
    slo: SLO,
    executor: Executor,
    start_qps: float = 2.0,
    max_qps: float = 256.0,
    granularity: float = 0.025,
    max_rounds: int = 12,
    on_round: Callable[[list[Search]], None] | None = None,
    progress: bool = True,
) -> list[Search]:
    if not start_qps > 0 or not 0 < granularity < 1:  # before the specs, which are at start_qps
        raise UserError("--start-qps must be positive and --granularity within (0, 1)")
    searches = []
    for spec in specs:
        validate(spec)
        searches.append(Search(spec.policy, spec, hi=start_qps))
    bar = tqdm(desc="capacity runs", unit="run", disable=not progress, leave=False)
    for _ in range(max_rounds):
        active = [s for s in searches if not s.done]
        if not active:
            break
        k = max(1, executor.workers // len(active))
        jobs, owners = [], []
        for s in active:
            for q in _points(s, k):
                jobs.append((s.spec.at_qps(q), slo))
                owners.append(s)
        bar.total = (bar.total or 0) + len(jobs)
        bar.refresh()
        for s, p in zip(owners, executor.map(evaluate, jobs, bar), strict=True):
            s.points.append(p)
        for s in active:
            _narrow(s, granularity, max_qps)
        if on_round:
            on_round(searches)
    bar.close()
    return searches


def _points(s: Search, k: int) -> list[float]:
    if not s.hi_failed:  # still looking for a failing top: probe the top first
        return [round(s.hi, 4)]
    step = (s.hi - s.lo) / (k + 1)
    return [round(s.lo + step * (i + 1), 4) for i in range(k)]


def _narrow(s: Search, granularity: float, max_qps: float) -> None:
    fails = [p.qps for p in s.points if not p.passed]
    if fails:
        s.hi, s.hi_failed = min(fails), True
    passes = [p.qps for p in s.points if p.passed and p.qps < s.hi]
    s.lo = max(passes, default=0.0)
    if not s.hi_failed:
        if s.hi >= max_qps:
            s.done = True
        else:
            s.lo, s.hi = s.hi, min(2 * s.hi, max_qps)
        return
    if s.hi - s.lo <= granularity * s.hi:
        s.done = True
