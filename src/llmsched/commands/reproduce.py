"""`llmsched reproduce`: the paper's headline (SLAI vs Sarathi-Serve) on the simulator, in one command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from llmsched.commands.capacity import runs_json
from llmsched.commands.options import (
    POSITIVE,
    POSITIVE_INT,
    check_executor_flags,
    command_line,
    executor_options,
    writable_dir,
)
from llmsched.report.files import write_json
from llmsched.report.html import table_html, write_html
from llmsched.report.text import capacity_flags, undecided_warning
from llmsched.studies.executor import Executor
from llmsched.studies.metadata import describe
from llmsched.studies.reproduce import BASELINE, GUARD, PAPER, SLAI, differences, paper_specs, reproduce
from llmsched.studies.slo import PAPER_SLO, parse_slo


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


@click.command(name="reproduce")
@click.option(
    "--trace",
    type=click.Path(dir_okay=False),
    default=None,
    help="Trace: paper (default: the paper's Openchat ShareGPT4 lengths), sharegpt-v3, or a CSV file.",
)
@click.option("--num-requests", type=POSITIVE_INT, default=16384, show_default=True)
@click.option("--time-limit", type=POSITIVE, default=2100.0, show_default=True, help="Simulated seconds per run.")
@executor_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="llmsched-reproduce",
    show_default=True,
    callback=writable_dir,
    help="Where report.html, plots and result.json go.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (nothing else on stdout).")
def command(
    trace: str | None,
    num_requests: int,
    time_limit: float,
    backend: str,
    ray_address: str | None,
    workers: int | None,
    out: str,
    as_json: bool,
) -> None:
    """Sarathi-Serve (FCFS, chunk 512, batch 128) vs SLAI under the paper's protocol: capacities, their
    ratio, and the median-TTFT reduction at Sarathi's capacity; writes an HTML report."""
    from llmsched.report.plots import plot_details  # matplotlib: a second to import
    from llmsched.workload import load_trace
    from llmsched.workload.trace import DEFAULT_TRACE

    check_executor_flags(backend)
    load_trace(trace)  # fail fast on a bad trace, before any run
    base = paper_specs(trace, num_requests, time_limit)[0]
    meta = describe(base, command_line(), str(parse_slo(PAPER_SLO)), [BASELINE, SLAI, GUARD])
    t0 = time.perf_counter()
    with Executor(backend, workers, ray_address) as ex:
        rep = reproduce(ex, trace, num_requests, time_limit)
    res = rep.result()
    why = differences(rep)
    res.update(
        differences=why,
        runs={s.policy: runs_json(s) for s in rep.searches},
        flags={s.policy: list(s.best.flags) if s.best else [] for s in rep.searches},
        stability_undecided_qps={s.policy: sorted(p.qps for p in s.undecided) for s in rep.searches},
        metadata=meta,
        wall_s=round(time.perf_counter() - t0, 1),
    )
    for s in rep.searches:
        warning = undecided_warning(s)
        if warning:
            click.echo(f"llmsched: warning: {warning}", err=True)
    res["trace"] = trace or DEFAULT_TRACE
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cap = res["capacity_qps"]
    rows = [
        ["capacity, Sarathi-Serve (QPS)", "not published", f"{cap['sarathi']:.3f}"],
        ["capacity, SLAI (QPS)", "not published", f"{cap['slai']:.3f}"],
        [
            "capacity ratio SLAI / Sarathi",
            f"{PAPER['capacity_ratio']:.2f}",
            "-" if res["capacity_ratio"] is None else f"{res['capacity_ratio']:.2f}",
        ],
        [
            f"median TTFT reduction at {res['at_qps']:.3f} QPS",
            _pct(PAPER["median_ttft_reduction"]),
            _pct(res["median_ttft_reduction"]),
        ],
    ]
    images = plot_details(rep.details, out_dir)
    runs = [
        [s.policy, p.qps, p.passed, p.reason, p.summary.get("median_ttft_ms"), p.summary.get("p99_ttft_ms"), p.growth]
        for s in rep.searches
        for p in sorted(s.points, key=lambda p: p.qps)
    ]
    write_html(
        out_dir / "report.html",
        "llmsched reproduce: SLAI vs Sarathi-Serve",
        [
            ("Paper vs llmsched", table_html(["", "paper", "llmsched"], rows)),
            ("Why they differ", table_html(["reason", "measured"], [[d["reason"], d["measured"]] for d in why])),
            (
                "At Sarathi's capacity",
                table_html(
                    ["policy", "median TTFT (ms)", "p99 TTFT (ms)"],
                    [[p, res["median_ttft_ms"][p], res["p99_ttft_ms"][p]] for p in res["median_ttft_ms"]],
                ),
            ),
            (
                "Capacity search runs",
                table_html(
                    [
                        "policy",
                        "qps",
                        "meets SLO",
                        "why not",
                        "median TTFT (ms)",
                        "p99 TTFT (ms)",
                        "queue growth (requests)",
                    ],
                    runs,
                ),
            ),
        ],
        images,
        meta,
    )
    write_json(out_dir / "result.json", res)
    if as_json:
        click.echo(json.dumps(res, sort_keys=True))
        return
    click.echo(f"{'':<42}{'paper':>14}{'llmsched':>12}")
    for label, paper, ours in rows:
        click.echo(f"{label:<42}{paper:>14}{ours:>12}")
    if res["slai_beyond_its_capacity_at_qps"]:
        click.echo(f"note: {res['at_qps']:.3f} QPS is beyond SLAI's own capacity: its queue grows there")
    for name, t in res["slai_tiers_at_capacity"].items():
        click.echo(f"SLAI at its capacity, tier {name}: p99 TBT {t['p99_itl_ms']:.0f} ms (SLO {t['tbt_slo_ms']:.0f})")
    click.echo(
        f"p99 TTFT at {res['at_qps']:.3f} QPS: "
        + ", ".join(f"{p} {v / 1e3:.1f} s" for p, v in res["p99_ttft_ms"].items() if v is not None)
    )
    for policy, q in res["paper_terms_met_while_queue_grows_qps"].items():
        if q is not None:
            click.echo(
                f"trap: at {q:.3f} QPS {policy} meets the paper's SLO terms over completed requests while "
                "its queue grows"
            )
    for s in rep.searches:
        for line in capacity_flags(s):
            click.echo(f"flagged: {line}")
    click.echo("why they differ:")
    for d in why:
        click.echo(f"- {d['reason']}: {d['measured']}")
    trace_id = f"{meta['trace']['name']} ({meta['trace']['sha256']})"
    click.echo(f"trace: {trace_id}; {res['wall_s']} s; report: {out_dir / 'report.html'}")
