"""`llmsched capacity`: the highest QPS each policy sustains under an SLO."""

from __future__ import annotations

import json
from typing import Any

import click

from llmsched.commands.options import (
    POLICY_LIST,
    POSITIVE,
    POSITIVE_INT,
    check_executor_flags,
    command_line,
    executor_options,
    spec_from,
    workload_options,
)
from llmsched.report.text import capacity_flags, undecided_warning
from llmsched.studies.capacity import Search, search
from llmsched.studies.executor import Executor
from llmsched.studies.metadata import describe
from llmsched.studies.slo import UNSTABLE_WARNING, parse_slo
from llmsched.studies.spec import check_rate_varies


def runs_json(s: Search) -> list[dict]:
    """The runs a search decided on, by QPS: what `--json` and reproduce's result.json list."""
    return [
        {
            "qps": p.qps,
            "passed": p.passed,
            "reason": p.reason,
            "median_ttft_ms": p.summary.get("median_ttft_ms"),
            "p99_ttft_ms": p.summary.get("p99_ttft_ms"),
            "queue_growth": p.growth,
            "stability_requests_needed": p.stability_needs,
            "flags": list(p.flags),
        }
        for p in sorted(s.points, key=lambda p: p.qps)
    ]


@click.command(name="capacity")
@click.option(
    "--policies", type=POLICY_LIST, default="sarathi,slai", show_default=True, help="Comma-separated policies."
)
@click.option(
    "--slo",
    type=str,
    default=None,
    help='SLO, e.g. "ttft_p50<=0.5,tbt_p99<=tier" (the paper\'s, default). Every SLO includes "stable" (a '
    'bounded queue) unless it names "unstable-ok" (warns: the trap in docs/capacity.md).',
)
@click.option("--start-qps", type=POSITIVE, default=2.0, show_default=True, help="Top of the first bracket.")
@click.option(
    "--granularity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.025,
    show_default=True,
    help="Stop when the bracket is narrower than this fraction of its top.",
)
@click.option(
    "--max-rounds", type=POSITIVE_INT, default=12, show_default=True, help="Most steps (runs decided on) per policy."
)
@workload_options
@executor_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (nothing else on stdout).")
def command(
    policies: list[str],
    slo: str | None,
    start_qps: float,
    granularity: float,
    max_rounds: int,
    backend: str,
    ray_address: str | None,
    workers: int | None,
    as_json: bool,
    **o: Any,
) -> None:
    """Bisect on QPS for the highest rate whose run meets the SLO, for each policy (runs in parallel). The rates
    run, and so the answer, do not depend on --workers or --backend."""
    check_executor_flags(backend)
    target = parse_slo(slo)
    specs = [spec_from(name, start_qps, o) for name in policies]
    check_rate_varies(specs[0])
    meta = describe(specs[0], command_line(), str(target), policies)
    if not target.stable:
        click.echo(f"llmsched: warning: {UNSTABLE_WARNING}", err=True)
    with Executor(backend, workers, ray_address) as ex:
        searches = search(specs, target, ex, start_qps=start_qps, granularity=granularity, max_rounds=max_rounds)
    for s in searches:
        warning = undecided_warning(s)
        if warning:
            click.echo(f"llmsched: warning: {warning}", err=True)
    out = {
        "capacity_qps": {s.policy: s.capacity for s in searches},
        "slo": str(target),
        "flags": {s.policy: list(s.best.flags) if s.best else [] for s in searches},
        "stability_undecided_qps": {s.policy: sorted(p.qps for p in s.undecided) for s in searches},
        "runs": {s.policy: runs_json(s) for s in searches},
        "metadata": meta,
    }
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
        return
    click.echo(f"capacity under SLO {target}:")
    for s in searches:
        click.echo(f"  {s.policy:<20} {s.capacity:8.3f} QPS  ({len(s.points)} runs)")
    for s in searches:
        for line in capacity_flags(s):
            click.echo(f"flagged: {line}")
