"""`llmsched simulate`: one policy on one workload, on the simulated engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from llmsched.commands.options import (
    POLICY,
    POSITIVE,
    command_line,
    only_with,
    spec_from,
    workload_options,
    writable_dir,
)
from llmsched.policies.sarathi import ORDERS as SARATHI_ORDERS
from llmsched.report.files import write_outputs
from llmsched.report.text import format_summary
from llmsched.studies.metadata import describe
from llmsched.studies.run import run
from llmsched.studies.spec import validate


@click.command(name="simulate")
@click.option("--policy", type=POLICY, default="sarathi", show_default=True, help="Scheduler.")
@click.option(
    "--order",
    type=click.Choice(SARATHI_ORDERS),
    default=None,
    help="With --policy sarathi: its waiting-queue order (spf-uncached and lpm see the prefix cache).",
)
@click.option(
    "--qps",
    type=POSITIVE,
    default=1.0,
    show_default=True,
    help="Mean arrival rate (requests/s; sessions/s with --trace sessions); not used replaying timestamps.",
)
@workload_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    callback=writable_dir,
    help="Write requests.csv, batches.csv and summary.json here.",
)
@click.option("--token-times", is_flag=True, help="With --out: also tokens.csv, every token's timestamp.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (nothing else on stdout).")
def command(
    policy: str, order: str | None, qps: float, out: str | None, token_times: bool, as_json: bool, **o: Any
) -> None:
    """Simulate one policy on one workload and print the summary."""
    only_with("--order", policy == "sarathi", "with --policy sarathi (sarathi-spf is sarathi --order spf)")
    only_with("--token-times", out is not None, "with --out")
    options = {"order": order} if order else {}
    spec = spec_from(policy, qps, o, **options)
    validate(spec)
    meta = describe(spec, command_line())
    result, summary = run(spec)
    if out:
        write_outputs(Path(out), result, summary, token_times, meta)
    if as_json:
        click.echo(json.dumps({**summary, "metadata": meta}, sort_keys=True))
    else:
        click.echo(format_summary(summary))
