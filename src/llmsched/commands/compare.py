"""`llmsched compare`: a policies x QPS grid, written as CSV, PNG plots and one HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from llmsched.commands.options import (
    POLICY_LIST,
    POSITIVE,
    check_executor_flags,
    command_line,
    executor_options,
    spec_from,
    workload_options,
    writable_dir,
)
from llmsched.report.files import write_csv
from llmsched.report.html import table_html, write_html
from llmsched.studies.executor import Executor
from llmsched.studies.grid import flatten, parse_grid, run_grid
from llmsched.studies.metadata import describe, settings
from llmsched.studies.spec import check_rate_varies

TABLE_KEYS = ("completed", "unfinished", "median_ttft_ms", "p99_ttft_ms", "p99_itl_ms", "request_throughput")


@click.command(name="compare")
@click.option(
    "--policies", type=POLICY_LIST, default="sarathi,slai", show_default=True, help="Comma-separated policies."
)
@click.option(
    "--qps", "qps_grid", type=str, default="0.2:2.0:0.2", show_default=True, help="start:stop:step or a comma list."
)
@click.option(
    "--cdf-qps", type=POSITIVE, default=None, help="QPS of the CDF and prompt-length plots (default: mid-grid)."
)
@workload_options
@executor_options
@click.option(
    "--out", type=click.Path(file_okay=False), default="llmsched-compare", show_default=True, callback=writable_dir
)
@click.option("--json", "as_json", is_flag=True, help="Print the grid's summaries as JSON.")
def command(
    policies: list[str],
    qps_grid: str,
    cdf_qps: float | None,
    backend: str,
    ray_address: str | None,
    workers: int | None,
    out: str,
    as_json: bool,
    **o: Any,
) -> None:
    """Run every policy at every QPS; write compare.csv, plots and report.html to --out."""
    from llmsched.report.plots import plot_details, plot_vs_qps  # matplotlib: a second to import

    check_executor_flags(backend)
    grid = parse_grid(qps_grid)
    specs = [spec_from(name, grid[0], o) for name in policies]
    check_rate_varies(specs[0])
    meta = describe(specs[0], command_line(), policies=policies)
    with Executor(backend, workers, ray_address) as ex:
        summaries, details = run_grid(specs, grid, ex, cdf_qps)
    columns = {s.policy: settings(s) for s in specs}
    rows = [flatten(s, columns[s["policy"]]) for s in summaries]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / "compare.csv", meta)
    images = plot_vs_qps(rows, out_dir) + plot_details(details, out_dir)
    table = table_html(
        ["policy", "qps", *TABLE_KEYS], [[r["policy"], r["qps"], *(r.get(k) for k in TABLE_KEYS)] for r in rows]
    )
    write_html(out_dir / "report.html", "llmsched compare", [("Runs", table)], images, meta)
    if as_json:
        click.echo(json.dumps({"runs": summaries, "metadata": meta}, sort_keys=True))
    else:
        click.echo(f"wrote {out_dir / 'compare.csv'}, {len(images)} plots and {out_dir / 'report.html'}")
