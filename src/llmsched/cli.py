"""The `llmsched` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

import click

from llmsched.errors import UserError
from llmsched.experiment import RunSpec, run, validate
from llmsched.perf import GPUS, MODELS
from llmsched.policies import POLICIES
from llmsched.workload import WorkloadConfig
from llmsched.workload.arrivals import ARRIVALS


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
            help="Trace CSV (num_prefill_tokens,num_decode_tokens[,arrived_at]); default: built-in "
            "ShareGPT V3 lengths (Mistral tokenizer).",
        ),
        click.option(
            "--num-requests",
            type=int,
            default=None,
            callback=_positive("num-requests"),
            help="Requests to sample (seeded shuffle); default: the whole trace.",
        ),
        click.option(
            "--arrival", type=str, default="poisson", show_default=True, help=f"Arrival process: {', '.join(ARRIVALS)}."
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
            help='SLO tiers, e.g. "paying:0.05:tbt=0.1,free:0.95:tbt=0.5" (default: one tier, TBT 0.2 s).',
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
        time_limit=o["time_limit"],
        batch_overhead_s=o["batch_overhead_ms"] / 1e3,
        ttft_slo=o["ttft_slo"],
        replicas=o["replicas"],
        router=o["router"],
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmsched")
def cli() -> None:
    """Schedulers for LLM inference (SLAI, RAD, Sarathi-Serve, vLLM, Orca, FasterTransformer), a calibrated
    discrete-event simulator, capacity search and the paper's reproduction."""


@cli.command()
@click.option("--policy", type=str, default="sarathi", show_default=True, help=f"Scheduler: {', '.join(POLICIES)}.")
@click.option("--order", type=str, default=None, help="Waiting-queue order for sarathi: fcfs or spf.")
@click.option("--qps", type=float, default=1.0, show_default=True, help="Mean arrival rate (requests/s).")
@workload_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Write requests.csv, batches.csv and summary.json here.",
)
@click.option("--token-times", is_flag=True, help="With --out: also tokens.csv, every token's timestamp.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (nothing else on stdout).")
def simulate(
    policy: str, order: str | None, qps: float, out: str | None, token_times: bool, as_json: bool, **o: Any
) -> None:
    """Simulate one policy on one workload and print the summary."""
    from llmsched.metrics import write_outputs

    options = {"order": order} if order else {}
    spec = spec_from(policy, qps, o, **options)
    validate(spec)
    result, summary = run(spec)
    if out:
        write_outputs(Path(out), result, summary, token_times)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(format_summary(summary))


def format_summary(s: dict) -> str:
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = [
        f"policy {s['policy']}  qps {s['qps']}  requests {s['num_requests']}: completed {s['completed']}, "
        f"unfinished {s['unfinished']}, rejected {s['rejected']}, preemptions {s['preemptions']}",
        f"throughput {s['request_throughput']:.3f} req/s, {s['output_throughput']:.0f} output tok/s; "
        f"goodput {f(s['request_goodput'])} req/s"
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
            f"{f(t['slo_attainment'])}"
        )
    if s["not_completed_reasons"]:
        lines.append("not completed: " + "; ".join(f"{n} x {r}" for r, n in s["not_completed_reasons"].items()))
    return "\n".join(lines)


@cli.command()
@click.option("--model", type=str, default="mistral-7b", show_default=True)
@click.option("--gpu", type=str, default="rtx6000ada", show_default=True)
@click.option("--prefill-tokens", type=int, default=0, show_default=True, help="Tokens of the prefill chunk.")
@click.option("--decodes", type=int, default=0, show_default=True, help="Decode sequences in the batch.")
@click.option("--context", type=int, default=None, help="Tokens already cached, for the chunk and each decode.")
@click.option("--prefill-context", type=int, default=None, help="Tokens already cached for the chunk.")
@click.option("--decode-context", type=int, default=None, help="Tokens already cached for each decode.")
@click.option(
    "--perf-model",
    type=click.Path(dir_okay=False),
    default=None,
    help="A profile CSV or fitted-model JSON instead of the catalog's model.",
)
@click.option("--json", "as_json", is_flag=True)
def perf(
    model: str,
    gpu: str,
    perf_model: str | None,
    prefill_tokens: int,
    decodes: int,
    context: int | None,
    prefill_context: int | None,
    decode_context: int | None,
    as_json: bool,
) -> None:
    """Batch time of one batch: a prefill chunk of N tokens plus D decodes."""
    from llmsched.perf import BatchShape, get_gpu, get_model

    pc = prefill_context if prefill_context is not None else (context or 0)
    dc = decode_context if decode_context is not None else (context or 0)
    for name, v in (
        ("prefill-tokens", prefill_tokens),
        ("decodes", decodes),
        ("prefill-context", pc),
        ("decode-context", dc),
    ):
        if v < 0:
            raise UserError(f"--{name} is {v}, expected a non-negative integer")
    if prefill_tokens + decodes == 0:
        raise UserError("--prefill-tokens and --decodes are both 0: the batch is empty")
    from llmsched.experiment import RunSpec
    from llmsched.experiment import perf_model as model_of

    get_model(model)
    get_gpu(gpu)
    m = model_of(RunSpec(model=model, gpu=gpu, perf_model=perf_model))
    shape = BatchShape.of([(prefill_tokens, pc)] if prefill_tokens else [], [dc] * decodes)
    ms = m.batch_time(shape) * 1e3
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch_time_ms": ms,
                    "model": model,
                    "gpu": gpu,
                    "perf_model": m.name,
                    "prefill_tokens": prefill_tokens,
                    "prefill_context": pc,
                    "decodes": decodes,
                    "decode_context": dc,
                }
            )
        )
    else:
        click.echo(f"{ms:.3f} ms  ({m.name}; chunk {prefill_tokens} at context {pc}, {decodes} decodes at {dc})")


# Each module in llmsched.commands defines a click command named `command`.
COMMAND_MODULES: tuple[str, ...] = (
    "capacity",
    "compare",
    "reproduce",
    "profile",
    "theory",
    "bench_engine",
    "model",
    "serve",
)


@cache
def register_commands() -> None:
    """Add the commands of llmsched.commands, once; at call time, so `python -m llmsched.cli` (whose commands
    import this module again under its own name) does not import itself in a circle."""
    for name in COMMAND_MODULES:
        cli.add_command(import_module(f"llmsched.commands.{name}").command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every user error is one line on stderr and exit status 2, without a traceback."""
    try:
        register_commands()
        cli.main(args=argv, prog_name="llmsched", standalone_mode=False)
    except UserError as e:
        click.echo(f"llmsched: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("llmsched: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"llmsched: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
