"""Capacity search: the highest QPS at which a policy's run meets an SLO.

Protocol (documented in docs/capacity.md):
- Start: the bracket [0, start_qps] (default 2.0, the reference's start_qps); while its top passes, the
  bracket doubles (up to `max_qps`).
- Then bisection: each step runs the bracket's midpoint (rounded to 4 decimals) and keeps the half that holds
  the boundary. Passing is assumed monotone in QPS.
- Stop: when the bracket is narrower than `granularity` x its top (default 2.5%, as Sarathi-Serve's
  search) or after `max_rounds` steps. The capacity is the highest QPS that passed (0 if none did).
The rates a search decides on depend only on the SLO's verdicts, never on the number of workers: spare
workers run, ahead of time, the rates the next steps may need (both outcomes of the pending ones), and
results that the path does not take are dropped. Runs execute on a process pool (all cores) or on Ray (see
`studies/executor.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from tqdm import tqdm

from llmsched.errors import UserError
from llmsched.metrics.stability import queue_growth
from llmsched.studies.executor import Executor
from llmsched.studies.run import run
from llmsched.studies.slo import QUEUE_GROWS, SLO, out_of_line
from llmsched.studies.spec import RunSpec, validate


@dataclass(frozen=True)
class Point:
    qps: float
    passed: bool
    reason: str
    summary: dict
    growth: float
    stable: bool
    flags: tuple[str, ...] = ()  # what is far out of line in a passing run (slo.out_of_line)
    # Requests the stability test would need to decide, where its verdict decided the run; None: it decided.
    stability_needs: int | None = None
    short: bool = False  # the verdict of a screening run shorter than the spec's (`evaluate_screened`)


@dataclass(frozen=True)
class Bracket:
    lo: float
    hi: float
    hi_failed: bool = False
    done: bool = False
    steps: int = 0

    @property
    def next_qps(self) -> float:
        """The rate this step runs: the top while no rate failed, then the midpoint."""
        return round(self.hi, 4) if not self.hi_failed else round((self.lo + self.hi) / 2, 4)

    def after(self, passed: bool, granularity: float, max_qps: float, max_rounds: int) -> Bracket:
        q, steps = self.next_qps, self.steps + 1
        if not self.hi_failed and passed:
            top = self.hi >= max_qps
            b = Bracket(self.hi, self.hi if top else min(2 * self.hi, max_qps), False, top, steps)
        elif passed:
            b = Bracket(q, self.hi, True, False, steps)
        else:
            b = Bracket(self.lo, q, True, False, steps)
        if b.hi_failed and b.hi - b.lo <= granularity * b.hi:
            b = Bracket(b.lo, b.hi, True, True, steps)
        return b if steps < max_rounds else Bracket(b.lo, b.hi, b.hi_failed, True, steps)


@dataclass
class Search:
    policy: str
    spec: RunSpec
    bracket: Bracket
    points: list[Point] = field(default_factory=list)  # the runs the search decided on, in order
    runs: dict[float, Point] = field(default_factory=dict)  # every run made, ahead-of-time ones included

    @property
    def done(self) -> bool:
        return self.bracket.done

    @property
    def best(self) -> Point | None:
        """The run at the capacity: the highest passing QPS."""
        return max((p for p in self.points if p.passed), key=lambda p: p.qps, default=None)

    @property
    def capacity(self) -> float:
        return self.best.qps if self.best else 0.0

    @property
    def undecided(self) -> list[Point]:
        """The runs the search decided on whose verdict rested on a stability test too short to decide."""
        return [p for p in self.points if p.stability_needs is not None]


def evaluate(spec: RunSpec, slo: SLO) -> Point:
    """One run at one QPS, checked against the SLO (executed in a worker)."""
    result, summary = run(spec)
    stab = queue_growth(result)
    summary["queue_growth"] = stab.growth
    passed, reason = slo.check(summary, stab.stable)
    flags = tuple(out_of_line(summary, slo)) if passed else ()
    needs = stab.requests_needed if slo.stable and (passed or reason == QUEUE_GROWS) else None
    return Point(spec.workload.qps, passed, reason, summary, stab.growth, stab.stable, flags, needs)


def evaluate_screened(spec: RunSpec, slo: SLO, short: int | None) -> Point:
    """`evaluate`, a run of `short` requests first: a short run that fails decides (a longer one only lets a queue grow
    further), unless its only failure is a stability test too short to decide."""
    n = spec.workload.num_requests
    if short and n is not None and short < n:
        p = evaluate(replace(spec, workload=replace(spec.workload, num_requests=short)), slo)
        if not p.passed and (p.reason != QUEUE_GROWS or p.stability_needs is None):
            return replace(p, short=True)
    return evaluate(spec, slo)


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
    brackets: Sequence[tuple[float, float]] | None = None,
    tops_fail: bool = False,
    screen: int | None = None,
) -> list[Search]:
    """`brackets`: per spec, (a rate known to pass or 0, the first top to try) instead of (0, start_qps); with
    `tops_fail`, the tops are known to fail (a stability bound) and the search bisects from the start. `screen`:
    each run is screened by a run of that many requests first (`evaluate_screened`)."""
    if not start_qps > 0 or not 0 < granularity < 1:
        raise UserError("--start-qps must be positive and --granularity within (0, 1)")
    if max_rounds < 1:
        raise UserError(f"--max-rounds is {max_rounds}, expected at least 1")
    searches = []
    for i, spec in enumerate(specs):
        validate(spec)
        lo, hi = brackets[i] if brackets is not None else (0.0, min(start_qps, max_qps))
        searches.append(Search(spec.policy, spec, Bracket(lo, hi, hi_failed=tops_fail and hi > lo)))
    rules = (granularity, max_qps, max_rounds)
    # closed however the search ends: a bar closed by the garbage collector prints after Ctrl-C's last line
    with tqdm(desc="capacity runs", unit="run", disable=not progress, leave=False) as bar:
        while True:
            for s in searches:
                _walk(s, rules)
            active = [s for s in searches if not s.done]
            if not active:
                break
            jobs, owners = [], []
            for s in active:
                for q in _ahead(s, max(1, executor.workers // len(active)), rules):
                    jobs.append((s.spec.at_qps(q), slo, screen))
                    owners.append(s)
            bar.total = (bar.total or 0) + len(jobs)
            bar.refresh()
            for s, p in zip(owners, executor.map(evaluate_screened, jobs, bar), strict=True):
                s.runs[p.qps] = p
            if on_round:
                on_round(searches)
    return searches


def _walk(s: Search, rules: tuple[float, float, int]) -> None:
    """Take every step whose run is done."""
    while not s.done and s.bracket.next_qps in s.runs:
        p = s.runs[s.bracket.next_qps]
        s.points.append(p)
        s.bracket = s.bracket.after(p.passed, *rules)


def _ahead(s: Search, budget: int, rules: tuple[float, float, int]) -> list[float]:
    """Up to `budget` rates to run now: the pending step's, then those of the steps after it under either
    outcome, breadth first (the outcome 'passed' first: while doubling it is the next top)."""
    out: list[float] = []
    frontier = [s.bracket]
    while frontier and len(out) < budget:
        b = frontier.pop(0)
        if b.done:
            continue
        q = b.next_qps
        if q in s.runs:
            frontier.append(b.after(s.runs[q].passed, *rules))
            continue
        if q not in out:
            out.append(q)
        frontier += [b.after(True, *rules), b.after(False, *rules)]
    return out
