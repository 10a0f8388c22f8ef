"""A run's summary as text, for the terminal. Every figure is true at the precision shown: goodput and throughput
share their rounding (so goodput never reads above throughput), and a fraction is cut, not rounded, so that 0.9991
reads 0.999, never 1."""

from __future__ import annotations

import math
from typing import Any

from llmsched.studies.capacity import Search


def fraction(x: float | None) -> str:
    """A share in [0, 1] with 3 decimals, truncated: '1' and '0' only when exact."""
    if x is None:
        return "-"
    if x in (0, 1):
        return str(int(x))
    cut = math.floor(x * 1000) / 1000
    return "<0.001" if cut == 0 else f"{cut:.3f}"


def format_summary(s: dict) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"policy {s['policy']}  qps {s['qps']}  requests {s['num_requests']}: completed {s['completed']}, "
        f"unfinished {s['unfinished']}, rejected {s['rejected']}, preemptions {s['preemptions']}",
        f"throughput {rate(s['request_throughput'])} req/s, {s['output_throughput']:.0f} output tok/s; "
        f"goodput {rate(s['request_goodput'])} req/s (SLO attainment {fraction(s.get('slo_attainment'))})"
        if s["request_throughput"] is not None
        else "no request completed",
        f"{'metric (ms)':<12}{'mean':>10}{'median':>10}{'p90':>10}{'p99':>10}",
    ]
    for m in ("ttft", "tpot", "itl", "e2el"):
        lines.append(f"{m:<12}" + "".join(f"{f(s[f'{k}_{m}_ms']):>10}" for k in ("mean", "median", "p90", "p99")))
    for name, t in s.get("tiers", {}).items():
        lines.append(
            f"tier {name} (TBT {t['tbt_slo_ms']:.0f} ms): completed {t['completed']}, median TTFT "
            f"{f(t['median_ttft_ms'])} ms, p99 ITL {f(t['p99_itl_ms'])} ms, SLO attainment "
            f"{fraction(t['slo_attainment'])}"
        )
    if s["not_completed_reasons"]:
        lines.append("not completed: " + "; ".join(f"{n} x {r}" for r, n in s["not_completed_reasons"].items()))
    if "batch_times" in s:
        lines.append(f"batch times {s['batch_times']}")
    return "\n".join(lines)


def capacity_flags(s: Search) -> list[str]:
    """What is far out of line at a policy's capacity (slo.out_of_line), one line each."""
    best = s.best
    return [f"{s.policy} at {best.qps:g} QPS: {flag}" for flag in best.flags] if best else []


def undecided_warning(s: Search) -> str | None:
    """Says which of a search's verdicts rested on a stability test too short to decide, and what run would do."""
    points = sorted(s.undecided, key=lambda p: p.qps)
    if not points:
        return None
    need = max(p.stability_needs or 0 for p in points)
    text = (
        f"{s.policy}: at {', '.join(f'{p.qps:g}' for p in points)} QPS the run is too short for the stability "
        f"test to decide (its queue fluctuates more than the growth it must detect); about {need:,} requests would"
    )
    limit = s.spec.time_limit
    if limit is not None and need / points[0].qps > limit:
        text += f", with --time-limit at least {need / points[0].qps:,.0f} s for them to arrive"
    return text
