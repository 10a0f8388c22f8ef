"""Options shared by the commands: the workload/model/engine flags of a simulated run (and the `RunSpec` they
make), and the executor flags of the commands that run many simulations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from llmsched.errors import UserError
from llmsched.perf import GPUS, MODELS
from llmsched.policies import POLICIES
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig
from llmsched.workload.arrivals import ARRIVALS


def executor_options(f: Callable) -> Callable:
    for opt in reversed(
        [
            click.option(
                "--backend",
                type=str,
                default="process",
                show_default=True,
                help="Where runs execute: process (a pool over all cores) or ray.",
            ),
            click.option(
                "--ray-address", type=str, default=None, help="Join this Ray cluster (default: start a local one)."
            ),
            click.option("--workers", type=int, default=None, help="Parallel runs (default: all cores)."),
        ]
    ):
        f = opt(f)
    return f


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise UserError("--policies is empty")
    for name in names:
        if name not in POLICIES:
            raise UserError(f"--policies: unknown policy {name!r}, expected names from {', '.join(POLICIES)}")
    if len(set(names)) != len(names):
        raise UserError(f"--policies {text!r} names a policy twice")
    return names


def _positive(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not value > 0:
            raise UserError(f"--{name} is {value}, expected a positive number")
        return value

    return check


def workload_options(f: Callable) -> Callable:
    """Workload, model and engine flags shared by simulate, compare and capacity."""
    opts = [
        click.option(
            "--trace",
            type=click.Path(dir_okay=False),
            default=None,
            help="Trace: paper (default: the paper's Openchat ShareGPT4 lengths, Llama-2 tokenizer), sharegpt-v3 "
            "(ShareGPT V3, Mistral tokenizer), or a CSV file (num_prefill_tokens,num_decode_tokens[,arrived_at]).",
        ),
        click.option(
            "--num-requests",
            type=int,
            default=None,
            callback=_positive("num-requests"),
            help="Requests to sample (seeded shuffle); default: the whole trace.",
        ),
        click.option(
            "--arrival",
            type=str,
            default=None,
            help=f"Arrival process: {', '.join(ARRIVALS)}. Default: trace (its arrived_at) for a trace that has an "
            "arrived_at column, else poisson-capped (the reference's: gaps capped at 3/qps).",
        ),
        click.option(
            "--burstiness",
            type=float,
            default=1.0,
            show_default=True,
            help="Gamma arrivals: squared coefficient of variation of the gaps (1 = Poisson).",
        ),
        click.option(
            "--tiers",
            type=str,
            default=None,
            help='SLO tiers, e.g. "paying:0.05:tbt=0.1,free:0.95:tbt=0.5", which "paper" names (default: one tier, '
            "TBT 0.2 s).",
        ),
        click.option(
            "--model",
            type=str,
            default="mistral-7b",
            show_default=True,
            help=f"Model: {', '.join(MODELS)}, or a Hugging Face model directory (its config.json).",
        ),
        click.option("--gpu", type=str, default="rtx6000ada", show_default=True, help=f"GPU: {', '.join(GPUS)}."),
        click.option(
            "--perf-model",
            type=click.Path(dir_okay=False),
            default=None,
            help="Batch-time model: a profile CSV (fitted on load) or a fitted-model JSON.",
        ),
        click.option("--token-budget", type=int, default=None, help="Max tokens per batch (default: the policy's)."),
        click.option("--max-num-seqs", type=int, default=None, help="Max requests holding KV (default: the policy's)."),
        click.option(
            "--num-blocks",
            type=int,
            default=None,
            help="KV blocks (default: from GPU memory x 0.9, weights and model).",
        ),
        click.option(
            "--block-size",
            type=int,
            default=16,
            show_default=True,
            help="Tokens per KV block (vLLM: 16 on GPUs, 128 on its CPU backend).",
        ),
        click.option(
            "--max-model-len",
            type=click.IntRange(min=1),
            default=None,
            help="Context of the model (default: the model's); a longer request (prompt + output) is rejected, "
            "counted and reported, as vLLM's server does.",
        ),
        click.option(
            "--time-limit",
            type=float,
            default=None,
            help="Stop each run at this simulated time (s), as the paper's 2100 s runs.",
        ),
        click.option(
            "--batch-overhead-ms",
            type=float,
            default=0.0,
            show_default=True,
            help="Host time added to every batch (scheduling, output processing) beyond the perf model.",
        ),
        click.option("--ttft-slo", type=float, default=None, help="TTFT SLO (s) for goodput."),
        click.option(
            "--replicas",
            type=str,
            default=None,
            help='Replicas: a count of --gpu ("4") or GPUs with counts ("rtx6000ada:2,a100-80gb:2").',
        ),
        click.option(
            "--router",
            type=str,
            default="round-robin",
            show_default=True,
            help="With --replicas: round-robin, random, jsq, least-work, power-of-two, resource-aware.",
        ),
        click.option("--seed", type=int, default=42, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def spec_from(policy: str, qps: float, o: dict[str, Any], **policy_options: Any) -> RunSpec:
    wl = WorkloadConfig(
        trace=o["trace"],
        num_requests=o["num_requests"],
        qps=qps,
        arrival=o["arrival"],
        burstiness=o["burstiness"],
        tiers=o["tiers"],
        seed=o["seed"],
    )
    return RunSpec(
        policy=policy,
        policy_options=tuple(sorted(policy_options.items())),
        workload=wl,
        model=o["model"],
        gpu=o["gpu"],
        perf_model=o["perf_model"],
        token_budget=o["token_budget"],
        max_num_seqs=o["max_num_seqs"],
        num_blocks=o["num_blocks"],
        block_size=o["block_size"],
        max_model_len=o["max_model_len"],
        time_limit=o["time_limit"],
        batch_overhead_s=o["batch_overhead_ms"] / 1e3,
        ttft_slo=o["ttft_slo"],
        replicas=o["replicas"],
        router=o["router"],
    )
