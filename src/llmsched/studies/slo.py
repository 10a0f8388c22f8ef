"""SLO specs for capacity search: "ttft_p50<=0.5,tbt_p99<=tier", "stable", "ttft_p50<=0.5,unstable-ok".

A term is METRIC_STAT<=LIMIT: METRIC is ttft, tpot, itl (alias tbt) or e2el; STAT is p50 (alias median),
p90, p99 or mean; LIMIT is seconds, or `tier` for itl/tpot: each tier's own TBT. Every SLO asks for a queue
that stays bounded (`stable`, see `metrics/stability.py`) unless it names `unstable-ok`: metrics over the
requests completed by the end of a run cannot see a backlog that grows without bound, so without the queue
check a policy that serves short prompts first "meets" a median-TTFT SLO far into overload (the trap in
docs/capacity.md). The paper's capacity is "ttft_p50<=0.5,tbt_p99<=tier" (with the queue check, by default).

A run that meets the SLO may still be far out of line; `out_of_line` names how, and the search reports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmsched.errors import UserError

PAPER_SLO = "ttft_p50<=0.5,tbt_p99<=tier"
UNSTABLE_OK = "unstable-ok"
UNSTABLE_WARNING = (
    f"the SLO names {UNSTABLE_OK}: a rate whose queue grows without bound can pass (metrics cover completed "
    "requests only), so the capacity may exceed what the policy sustains (docs/capacity.md)"
)
# A passing run is flagged when its p99 TTFT exceeds this multiple of the SLO's TTFT limit (or, with no TTFT
# term, of the run's own median TTFT): a tail that long means some requests wait far beyond what the SLO
# describes (a starved long prompt, a backlog at the end of a time-limited run).
P99_TTFT_FACTOR = 10.0
# ... or when more than this share of the requests that arrived before the run ended is unfinished: a stable
# queue holds a few dozen requests at the end of a run of thousands, an overloaded one a growing backlog.
UNFINISHED_SHARE = 0.05
NOT_ARRIVED = "not arrived before the time limit"  # the engine's reason for requests after the end of a run
QUEUE_GROWS = "queue grows"
_TERM = re.compile(r"^(ttft|tpot|itl|tbt|e2el)_(p50|median|p90|p99|mean)<=(tier|[0-9.]+(?:e-?[0-9]+)?)$")


@dataclass(frozen=True)
class Term:
    metric: str
    stat: str  # "median", "p90", "p99", "mean"
    limit: float | None  # seconds; None = each tier's TBT

    @property
    def key(self) -> str:
        return f"{self.stat}_{self.metric}_ms"

    def __str__(self) -> str:
        stat = "p50" if self.stat == "median" else self.stat
        return f"{self.metric}_{stat}<={'tier' if self.limit is None else f'{self.limit:g}'}"


@dataclass(frozen=True)
class SLO:
    terms: tuple[Term, ...] = ()
    stable: bool = True

    def __str__(self) -> str:
        return ",".join([str(t) for t in self.terms] + (["stable"] if self.stable else [UNSTABLE_OK]))

    @property
    def ttft_limit_s(self) -> float | None:
        """The tightest TTFT limit among the terms (any statistic), None without one."""
        return min((t.limit for t in self.terms if t.metric == "ttft" and t.limit is not None), default=None)

    def check(self, summary: dict, stable: bool) -> tuple[bool, str]:
        """(met, why not: every failing term, '; '-separated)."""
        if summary.get("completed", 0) == 0:
            return False, "no request completed"
        failures = [f for t in self.terms for f in _failures(t, summary)]
        if self.stable and not stable:
            failures.append(QUEUE_GROWS)
        return not failures, "; ".join(failures)


def _failures(t: Term, summary: dict) -> list[str]:
    if t.limit is not None:
        value = summary.get(t.key)
        if value is None or value > t.limit * 1e3 + 1e-9:
            return [f"{t.key} {'-' if value is None else f'{value:.1f}'} > {t.limit * 1e3:g}"]
        return []
    groups = summary.get("tiers") or {"all": {**summary}}
    out = []
    for name, g in groups.items():
        value, limit_ms = g.get(t.key), g["tbt_slo_ms"]
        if value is not None and value > limit_ms + 1e-9:
            out.append(f"{name}: {t.key} {value:.1f} > {limit_ms:g}")
    return out


def out_of_line(summary: dict, slo: SLO) -> list[str]:
    """What is far out of line in a run (checked on runs that meet the SLO; empty if nothing is)."""
    flags = []
    p99, median = summary.get("p99_ttft_ms"), summary.get("median_ttft_ms")
    limit_ms = slo.ttft_limit_s * 1e3 if slo.ttft_limit_s is not None else median
    if p99 is not None and limit_ms and p99 > P99_TTFT_FACTOR * limit_ms:
        ref = "the SLO's TTFT limit" if slo.ttft_limit_s is not None else "the median TTFT"
        flags.append(f"p99 TTFT {p99 / 1e3:.1f} s is {p99 / limit_ms:.0f}x {ref} (flagged above {P99_TTFT_FACTOR:g}x)")
    arrived = summary.get("num_requests", 0) - summary.get("not_completed_reasons", {}).get(NOT_ARRIVED, 0)
    left = summary.get("unfinished", 0) + summary.get("rejected", 0) - (summary.get("num_requests", 0) - arrived)
    if arrived > 0 and left > UNFINISHED_SHARE * arrived:
        flags.append(
            f"{left} of {arrived} arrived requests ({100 * left / arrived:.1f}%) not completed "
            f"(flagged above {100 * UNFINISHED_SHARE:g}%)"
        )
    return flags


def parse_slo(spec: str | None) -> SLO:
    """Parse --slo (default: the paper's); every SLO includes `stable` unless it names `unstable-ok`."""
    spec = PAPER_SLO if spec is None else spec
    terms: list[Term] = []
    parts = [p.strip().replace(" ", "") for p in spec.split(",")]
    if "stable" in parts and UNSTABLE_OK in parts:
        raise UserError(f"--slo {spec!r} names both 'stable' and {UNSTABLE_OK!r}")
    for part in parts:
        if part in ("stable", UNSTABLE_OK):
            continue
        m = _TERM.match(part)
        if not m:
            raise UserError(
                f"--slo: {part!r} should look like ttft_p50<=0.5 (metric ttft|tpot|itl|tbt|e2el, stat "
                f"p50|p90|p99|mean, limit in seconds or 'tier'), 'stable' or {UNSTABLE_OK!r}"
            )
        metric, stat, limit = m.groups()
        metric = "itl" if metric == "tbt" else metric
        stat = "median" if stat == "p50" else stat
        if limit == "tier" and metric not in ("itl", "tpot"):
            raise UserError(f"--slo: {part!r}: 'tier' limits apply to tbt/itl/tpot only")
        value = None if limit == "tier" else float(limit)
        if value is not None and not value > 0:
            raise UserError(f"--slo: {part!r}: the limit must be positive seconds")
        terms.append(Term(metric, stat, value))
    stable = UNSTABLE_OK not in parts
    if not terms and not stable:
        raise UserError(f"--slo {spec!r} has no term to meet")
    return SLO(tuple(terms), stable)
