"""Options shared by the commands: the workload/model/engine flags of a simulated run (and the `RunSpec` they
make), and the executor flags of the commands that run many simulations."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from llmsched.errors import UserError
from llmsched.perf import GPUS, MODELS, get_model
from llmsched.policies import POLICIES, make_policy
from llmsched.routers import ROUTERS
from llmsched.studies.executor import BACKENDS
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig
from llmsched.workload.arrivals import ARRIVALS
from llmsched.workload.sessions import ANSWERS, RECORDED
from llmsched.workload.system_prompts import system_prompts_problem


def writable_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of an output folder option: the folder can be created and written, checked before the work starts
    (a run can take minutes); what the check created is removed again, so an interrupted command leaves nothing."""
    if value is None:
        return None
    path = Path(value)
    missing = [d for d in (path, *path.parents) if not d.exists()]  # deepest first
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise click.BadParameter(f"cannot write in folder {value} ({e.strerror or e})") from None
    finally:
        for d in missing:
            try:
                d.rmdir()
            except OSError:
                pass
    return value


def writable_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback of an output file option: its folder exists and can be written, checked before the work starts."""
    if value is None:
        return None
    path = Path(value)
    folder = path.parent
    if path.is_dir():
        raise click.BadParameter(f"{value} is a folder, expected a file name")
    if not folder.is_dir():
        raise click.BadParameter(f"cannot write {value}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise click.BadParameter(f"cannot write in folder {folder} ({e.strerror or e})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise click.BadParameter(f"cannot write {value} (permission denied)")
    return value


# Typed values: click answers a bad one with a one-line "Invalid value for '--flag': ..." and exit status 2.
POSITIVE_INT = click.IntRange(min=1)
NON_NEGATIVE_INT = click.IntRange(min=0)
POSITIVE = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE = click.FloatRange(min=0)
SEED = click.IntRange(min=0, max=2**32 - 1)  # numpy's seeds
GPU = click.Choice(list(GPUS))
POLICY = click.Choice(list(POLICIES))
ROUTER = click.Choice(list(ROUTERS))


class ModelName(click.ParamType):
    """A catalog model or a Hugging Face model directory (its config.json gives the shape)."""

    name = "model"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            get_model(value)
        except UserError as e:
            if value in MODELS or os.path.isfile(os.path.join(value, "config.json")):
                self.fail(str(e), param, ctx)  # a model directory whose config.json is unusable
            self.fail(f"{value!r} is not one of {', '.join(MODELS)}, nor a model directory (config.json)", param, ctx)
        return value


class SystemPromptsSpec(click.ParamType):
    """K:L:FRACTION (`workload.system_prompts`), kept as the text the workload config takes."""

    name = "K:L:FRACTION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        problem = system_prompts_problem(str(value))
        if problem is not None:
            self.fail(f"{value!r}, {problem}", param, ctx)
        return str(value)


class NameList(click.ParamType):
    """Comma-separated names, each one of `choices`, none twice."""

    name = "names"

    def __init__(self, choices: list[str]) -> None:
        self.choices = choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        names = [n.strip() for n in str(value).split(",") if n.strip()]
        if not names:
            self.fail("is empty, expected comma-separated names", param, ctx)
        for name in names:
            if name not in self.choices:
                self.fail(f"{name!r} is not one of {', '.join(self.choices)}", param, ctx)
        if len(set(names)) != len(names):
            self.fail(f"{value!r} names one twice", param, ctx)
        return names


class PolicyOption(click.ParamType):
    """[POLICY:]KEY=VALUE: one policy knob (`make_policy(name, KEY=VALUE)`), for POLICY only or for every policy
    run; the value as a number, true/false, or text."""

    name = "[policy:]key=value"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str | None, str, object]:
        if isinstance(value, tuple):
            return value
        head, sep, text = str(value).partition("=")
        policy, _, key = head.rpartition(":")
        if not sep or not key.strip().isidentifier() or not text.strip():
            self.fail(f"{value!r} is not [POLICY:]KEY=VALUE (e.g. deadline-sized:cap_s=2.5)", param, ctx)
        if policy and policy not in POLICIES:
            self.fail(f"{policy!r} is not one of {', '.join(POLICIES)}", param, ctx)
        text = text.strip()
        parsed: object = {"true": True, "false": False}.get(text.lower(), text)
        for kind in (int, float):
            try:
                parsed = kind(text)
                break
            except ValueError:
                pass
        return policy or None, key.strip(), parsed


def policy_knobs(options: tuple[tuple[str | None, str, object], ...], policies: list[str]) -> dict[str, dict]:
    """Each policy's knobs from `PolicyOption` values, checked by building the policy (one-line error)."""
    knobs: dict[str, dict] = {p: {} for p in policies}
    for policy, key, value in options:
        if policy is not None and policy not in knobs:
            raise UserError(f"--policy-option {policy}:{key}: {policy} is not among the policies run")
        for p in [policy] if policy else policies:
            knobs[p][key] = value
    for p, k in knobs.items():
        if k:
            try:
                make_policy(p, **k)
            except UserError as e:
                raise UserError(f"--policy-option: {e}") from None
    return knobs


class IntList(click.ParamType):
    """Comma-separated integers within [lo, hi], none twice."""

    name = "integers"

    def __init__(self, lo: int = 1, hi: int | None = None) -> None:
        self.lo, self.hi = lo, hi

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            values = [int(x) for x in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not comma-separated integers", param, ctx)
        for v in values:
            if v < self.lo or (self.hi is not None and v > self.hi):
                top = "" if self.hi is None else f" to {self.hi}"
                self.fail(f"{v} is out of range, expected {self.lo}{top}", param, ctx)
        if len(set(values)) != len(values):
            self.fail(f"{value!r} names a value twice", param, ctx)
        return values


MODEL = ModelName()
POLICY_LIST = NameList(list(POLICIES))
ROUTER_LIST = NameList(list(ROUTERS))
CATALOG_MODEL_LIST = NameList(list(MODELS))


def given(flag: str) -> bool:
    """Whether the user set this option of the current command (rather than leaving its default)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    name = next((p.name for p in ctx.command.params if flag in p.opts), None)
    if name is None:
        raise ValueError(f"{ctx.command.name} has no option {flag}")
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def only_with(flag: str, condition: bool, needs: str) -> None:
    """A flag that means nothing without another is refused, not silently dropped."""
    if not condition and given(flag):
        raise click.UsageError(f"{flag} applies only {needs}")


def executor_options(f: Callable) -> Callable:
    for opt in reversed(
        [
            click.option(
                "--backend",
                type=click.Choice(BACKENDS),
                default="process",
                show_default=True,
                help="Where runs execute: process (a pool over all cores) or ray.",
            ),
            click.option(
                "--ray-address",
                type=str,
                default=None,
                help="With --backend ray: join this Ray cluster (default: start a local one).",
            ),
            click.option("--workers", type=POSITIVE_INT, default=None, help="Parallel runs (default: all cores)."),
        ]
    ):
        f = opt(f)
    return f


def command_line() -> list[str] | None:
    """The arguments this command was run with (after `llmsched`), as `cli.main` received them."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx else None
    return list(obj["argv"]) if isinstance(obj, dict) and "argv" in obj else None


def check_executor_flags(backend: str) -> None:
    only_with("--ray-address", backend == "ray", "with --backend ray")


def workload_options(f: Callable) -> Callable:
    """Workload, model and engine flags shared by simulate, compare and capacity."""
    opts = [
        click.option(
            "--trace",
            type=click.Path(dir_okay=False),
            default=None,
            help="Trace: paper (default: the paper's Openchat ShareGPT4 lengths, Llama-2 tokenizer), sharegpt-v3 "
            "(ShareGPT V3, Mistral tokenizer), a CSV file (num_prefill_tokens,num_decode_tokens[,arrived_at]), a "
            "Mooncake JSONL file (timestamp,input_length,output_length,hash_ids), or sessions: multi-turn ShareGPT V3 "
            "chats as a closed loop (--qps: sessions/s).",
        ),
        click.option(
            "--num-requests",
            type=POSITIVE_INT,
            default=None,
            help="Requests to sample (seeded shuffle); default: the whole trace.",
        ),
        click.option(
            "--num-sessions",
            type=click.IntRange(min=1),
            default=None,
            help="--trace sessions: sessions to sample (seeded shuffle); default: all 4,000.",
        ),
        click.option(
            "--think-time",
            type=click.FloatRange(min=0),
            default=None,
            help="--trace sessions: mean seconds (exponential) from an answer to the next turn; default: 10.",
        ),
        click.option(
            "--answers",
            type=click.Choice(ANSWERS),
            default=RECORDED,
            show_default=True,
            help="--trace sessions: the answer each next turn's prompt holds: the one the engine generated (its full "
            "blocks cached as decoded, so the next turn can hit them, as in vLLM) or the recorded one (never hit).",
        ),
        click.option(
            "--system-prompts",
            type=SystemPromptsSpec(),
            default=None,
            help="K:L:FRACTION: K shared system prompts of L tokens; each request (each session) starts with one "
            "of them with probability FRACTION.",
        ),
        click.option(
            "--arrival",
            type=click.Choice(ARRIVALS),
            default=None,
            help=f"Arrival process: {', '.join(ARRIVALS)}. Default: trace (its arrived_at, a Mooncake trace's "
            "timestamps) for a trace that has them, else poisson-capped (the reference's: gaps capped at 3/qps).",
        ),
        click.option(
            "--rate-scale",
            type=click.FloatRange(min=0, min_open=True),
            default=1.0,
            show_default=True,
            help="Replay a trace's arrivals this many times faster (2 = twice the rate); --qps is not used then.",
        ),
        click.option(
            "--burstiness",
            type=POSITIVE,
            default=1.0,
            show_default=True,
            help="With --arrival gamma: squared coefficient of variation of the gaps (1 = Poisson).",
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
            type=MODEL,
            default="mistral-7b",
            show_default=True,
            help=f"Model: {', '.join(MODELS)}, or a Hugging Face model directory (its config.json).",
        ),
        click.option("--gpu", type=GPU, default="rtx6000ada", show_default=True),
        click.option(
            "--tensor-parallel-size",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="GPUs per replica (tensor parallelism, as vLLM's flag); batch times of more than one are estimated.",
        ),
        click.option(
            "--perf-model",
            type=click.Path(dir_okay=False),
            default=None,
            help="Batch-time model: a profile CSV (fitted on load) or a fitted-model JSON.",
        ),
        click.option(
            "--token-budget", type=POSITIVE_INT, default=None, help="Max tokens per batch (default: the policy's)."
        ),
        click.option(
            "--max-num-seqs", type=POSITIVE_INT, default=None, help="Max requests holding KV (default: the policy's)."
        ),
        click.option(
            "--num-blocks",
            type=POSITIVE_INT,
            default=None,
            help="KV blocks (default: from GPU memory x 0.9, weights and model).",
        ),
        click.option(
            "--block-size",
            type=POSITIVE_INT,
            default=16,
            show_default=True,
            help="Tokens per KV block (vLLM: 16 on GPUs, 128 on its CPU backend).",
        ),
        click.option(
            "--max-model-len",
            type=POSITIVE_INT,
            default=None,
            help="Context of the model (default: the model's); a longer request (prompt + output) is rejected, "
            "counted and reported, as vLLM's server does.",
        ),
        click.option(
            "--time-limit",
            type=POSITIVE,
            default=None,
            help="Stop each run at this simulated time (s), as the paper's 2100 s runs.",
        ),
        click.option(
            "--batch-overhead-ms",
            type=NON_NEGATIVE,
            default=0.0,
            show_default=True,
            help="Host time added to every batch (scheduling, output processing) beyond the perf model.",
        ),
        click.option("--ttft-slo", type=POSITIVE, default=None, help="TTFT SLO (s) for goodput."),
        click.option(
            "--replicas",
            type=str,
            default=None,
            help='Replicas: a count of --gpu ("4") or GPUs with counts ("rtx6000ada:2,a100-80gb:2").',
        ),
        click.option(
            "--router",
            type=ROUTER,
            default=None,
            help="With --replicas: which replica takes each request [default: round-robin]; prefix-affinity, "
            "cache-aware and prefix-score see the prompts' prefix ids.",
        ),
        click.option(
            "--prefix-caching",
            is_flag=True,
            help="Reuse cached prompt blocks across requests (vLLM's enable_prefix_caching); hits need a workload "
            "with prefix ids.",
        ),
        click.option(
            "--kv-offloading-size",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="GIB",
            help="With --prefix-caching: a CPU KV tier of this many GiB of host memory per replica, as vLLM's "
            "--kv-offloading-size (native backend): blocks stored as computed, evicted LRU, hits loaded over the "
            "host link.",
        ),
        click.option("--seed", type=SEED, default=42, show_default=True),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def spec_from(policy: str, qps: float, o: dict[str, Any], **policy_options: Any) -> RunSpec:
    only_with("--router", o["replicas"] is not None, "with --replicas (it picks a replica for each request)")
    only_with("--burstiness", o["arrival"] == "gamma", "with --arrival gamma")
    wl = WorkloadConfig(
        trace=o["trace"],
        num_requests=o["num_requests"],
        qps=qps,
        arrival=o["arrival"],
        rate_scale=o["rate_scale"],
        num_sessions=o["num_sessions"],
        think_time=o["think_time"],
        answers=o["answers"],
        system_prompts=o["system_prompts"],
        prefix_block=o["block_size"],
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
        tensor_parallel=o["tensor_parallel_size"],
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
        router=o["router"] or RunSpec.router,
        enable_prefix_caching=o["prefix_caching"],
        kv_offloading_size=o["kv_offloading_size"],
    )
