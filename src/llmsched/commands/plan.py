"""`llmsched plan`: the cheapest deployment that meets an SLO at a target rate, and the cost-capacity frontier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from llmsched.commands.options import (
    CATALOG_MODEL_LIST,
    POLICY_LIST,
    POSITIVE,
    POSITIVE_INT,
    ROUTER_LIST,
    SEED,
    IntList,
    check_executor_flags,
    executor_options,
    only_with,
    writable_dir,
)
from llmsched.errors import UserError
from llmsched.perf.catalog import GPUS, PRICES
from llmsched.report.plan import plan_json, plan_text, write_plan
from llmsched.studies.executor import Executor
from llmsched.studies.plan import LOOKAHEAD, Space, make_plan, parse_gpus
from llmsched.studies.slo import PAPER_SLO, parse_slo
from llmsched.studies.spec import MAX_TP, RunSpec, check_rate_varies
from llmsched.workload import WorkloadConfig
from llmsched.workload.arrivals import ARRIVALS

DEFAULT_GPUS = "h100-80gb,a100-80gb,l40s,a10g"


class GpuPrices(click.ParamType):
    """NAME[:USD_PER_GPU_HOUR],...: catalog GPUs, each with its price (the catalog's where none is given)."""

    name = "gpus"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_gpus(str(value))
        except UserError as e:
            self.fail(str(e).removeprefix("--gpus: ").removeprefix("--gpus "), param, ctx)


@click.command(name="plan")
@click.option("--qps", type=POSITIVE, required=True, help="Target rate (requests/s).")
@click.option(
    "--slo",
    type=str,
    default=None,
    help=f'SLO, e.g. "ttft_p50<=0.5,tbt_p99<=tier" (default: {PAPER_SLO}, the paper\'s); every SLO asks for a '
    "bounded queue.",
)
@click.option(
    "--model",
    "models",
    type=CATALOG_MODEL_LIST,
    default="llama-3.1-8b",
    show_default=True,
    help="Model(s), comma-separated; each is planned for on its own.",
)
@click.option(
    "--gpus",
    type=GpuPrices(),
    default=DEFAULT_GPUS,
    show_default=True,
    help="GPU types, each NAME:PRICE (USD per GPU-hour) or NAME (the catalog's price, docs/plan.md): "
    + ", ".join(f"{g} {PRICES[g].usd_per_hour:g}" for g in GPUS if g in PRICES)
    + ".",
)
@click.option("--tp", type=IntList(1, MAX_TP), default="1,2,4,8", show_default=True, help="Tensor-parallel degrees.")
@click.option("--max-gpus", type=POSITIVE_INT, default=16, show_default=True, help="GPUs of a configuration at most.")
@click.option("--policies", type=POLICY_LIST, default="sarathi,slai", show_default=True, help="Policies.")
@click.option(
    "--routers",
    type=ROUTER_LIST,
    default="round-robin,jsq,least-work",
    show_default=True,
    help="Routers (of configurations with more than one replica).",
)
@click.option("--token-budgets", type=IntList(1), default=None, help="Token budgets (default: each policy's).")
@click.option("--max-num-seqs", type=IntList(1), default=None, help="max_num_seqs values (default: each policy's).")
@click.option(
    "--trace", type=click.Path(dir_okay=False), default=None, help="Trace: paper (default), sharegpt-v3 or a CSV file."
)
@click.option("--num-requests", type=POSITIVE_INT, default=2000, show_default=True, help="Requests per run.")
@click.option(
    "--short-requests",
    type=click.IntRange(min=0),
    default=None,
    help="Requests of the screening run at the target (default: a quarter of --num-requests; 0: none).",
)
@click.option(
    "--arrival",
    type=click.Choice(ARRIVALS),
    default=None,
    help="Arrival process (default: poisson-capped; trace for a CSV with arrived_at).",
)
@click.option(
    "--burstiness", type=POSITIVE, default=1.0, show_default=True, help="With --arrival gamma: the gaps' CV^2."
)
@click.option("--tiers", type=str, default=None, help='SLO tiers, e.g. "paper" (default: one tier, TBT 0.2 s).')
@click.option("--time-limit", type=POSITIVE, default=None, help="Stop each run at this simulated time (s).")
@click.option(
    "--granularity",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="Capacity searches stop within this fraction of the rate.",
)
@click.option(
    "--frontier-cost",
    type=click.FloatRange(min=1),
    default=2.0,
    show_default=True,
    help="The frontier reaches this multiple of the answer's cost.",
)
@click.option(
    "--lookahead",
    type=POSITIVE_INT,
    default=LOOKAHEAD,
    show_default=True,
    help="Candidates run at once (the plan depends on it, not on --workers).",
)
@click.option("--seed", type=SEED, default=42, show_default=True)
@executor_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    callback=writable_dir,
    help="Write plan.json, configurations.csv, frontier.csv, frontier.png and report.html here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (nothing else on stdout).")
def command(
    qps: float,
    slo: str | None,
    models: list[str],
    gpus: tuple,
    tp: list[int],
    max_gpus: int,
    policies: list[str],
    routers: list[str],
    token_budgets: list[int] | None,
    max_num_seqs: list[int] | None,
    num_requests: int,
    short_requests: int | None,
    backend: str,
    ray_address: str | None,
    workers: int | None,
    out: str | None,
    as_json: bool,
    **o: Any,
) -> None:
    """Search GPU type, tensor parallelism, replicas, policy, router, token budget and max_num_seqs for the cheapest
    deployment whose simulated runs meet the SLO at --qps; print it with its margin and the command lines that
    deploy it, and the frontier of cost against capacity. Every figure says whether its batch times are measured or
    estimated (docs/plan.md)."""
    check_executor_flags(backend)
    only_with("--burstiness", o["arrival"] == "gamma", "with --arrival gamma")
    target = parse_slo(PAPER_SLO if slo is None else slo)
    space = Space(
        models=tuple(models),
        gpus=gpus,
        tps=tuple(tp),
        max_gpus=max_gpus,
        policies=tuple(policies),
        routers=tuple(routers),
        token_budgets=tuple(token_budgets) if token_budgets else None,
        max_num_seqs=tuple(max_num_seqs) if max_num_seqs else None,
    )
    wl = WorkloadConfig(
        trace=o["trace"],
        num_requests=num_requests,
        qps=qps,
        arrival=o["arrival"],
        burstiness=o["burstiness"],
        tiers=o["tiers"],
        seed=o["seed"],
    )
    base = RunSpec(workload=wl, time_limit=o["time_limit"])
    check_rate_varies(base)
    if short_requests is not None and short_requests >= num_requests:
        raise UserError(f"--short-requests {short_requests} is not below --num-requests {num_requests}")
    short = num_requests // 4 if short_requests is None else short_requests
    with Executor(backend, workers, ray_address) as ex:
        plan = make_plan(
            space,
            base,
            qps,
            target,
            ex,
            short_requests=short or None,
            granularity=o["granularity"],
            frontier_cost=o["frontier_cost"],
            progress=not as_json,
            lookahead=o["lookahead"],
        )
    plan.settings = {
        "num_requests": num_requests,
        "short_requests": short,
        "trace": o["trace"] or "paper",
        "arrival": o["arrival"],
        "tiers": o["tiers"],
        "seed": o["seed"],
        "granularity": o["granularity"],
        "frontier_cost": o["frontier_cost"],
        "lookahead": o["lookahead"],
    }
    if out:
        write_plan(Path(out), plan, space)
    if as_json:
        click.echo(json.dumps(plan_json(plan, space), sort_keys=True))
    else:
        click.echo(plan_text(plan, space))
