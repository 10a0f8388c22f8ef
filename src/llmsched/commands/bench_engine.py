"""`llmsched bench-engine`: replay a workload into a real in-process vLLM engine, once per policy."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from llmsched.commands.options import POSITIVE, POSITIVE_INT, SEED, NameList, PolicyOption, policy_knobs, writable_dir
from llmsched.errors import UserError
from llmsched.integrations.vllm.engine import DEFAULT_POLICY
from llmsched.policies import POLICIES, needs_perf


def model_max_len(model_dir: str) -> int:
    from llmsched.perf.hf_config import read_hf_config

    cfg = read_hf_config(model_dir)
    return int(cfg.get("max_position_embeddings") or 2048)


def run_policy(
    setup: Any,
    policy: str,
    wl: Any,
    max_len: int,
    time_limit: float | None,
    steps_out: str | None = None,
    run_log: str | None = None,
    prefixes: tuple[int, int] = (0, 0),
) -> tuple[Any, dict]:
    """One policy: a fresh engine, the workload replayed on the real clock, the simulator's summary; with
    `steps_out`, each step's shape and time written there as CSV; with `run_log`, the run as JSON for
    `sim.replay` (every request and step); `prefixes`: (number, tokens) of the shared prompt prefixes
    (`engine.random_prompts`). With prefix caching on, the summary's `prefix_cache` holds vLLM's counters over
    the replay."""
    import gc

    from llmsched.integrations.vllm.engine import make_engine, replay, scheduler_of, warm_up
    from llmsched.integrations.vllm.prefix import hit_rate
    from llmsched.metrics import summarize
    from llmsched.workload import build_requests

    requests, tiers = build_requests(wl, max_len)
    engine = make_engine(setup, policy)
    try:
        warm_up(engine, setup.token_budget)
        if setup.enable_prefix_caching:  # the warm-up's blocks would be hits for nothing in the workload
            engine.reset_prefix_cache()
        result, recorder = replay(engine, requests, wl.seed, time_limit, None, *prefixes)
        if steps_out is not None:
            recorder.write_steps(steps_out)
        if run_log is not None:
            log = recorder.engine_log(policy, result, setup, max_len)
            Path(run_log).write_text(json.dumps(log.to_json()) + "\n")
        stats = dict(getattr(scheduler_of(engine), "stats", {}))
    finally:
        engine.engine_core.shutdown()
        del engine
        gc.collect()
    summary = {"policy": policy, "qps": wl.qps, **summarize(result, tiers)}
    s = recorder.schedule_s
    summary["mean_schedule_ms"] = float(sum(s) / len(s) * 1e3) if s else None
    if stats:
        summary["plugin"] = stats
    if setup.enable_prefix_caching:
        summary["prefix_cache"] = {**recorder.prefix_cache, "hit_rate": hit_rate(recorder.prefix_cache)}
    return result, summary


@click.command("bench-engine")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="HF model directory.")
@click.option(
    "--policies",
    type=NameList([DEFAULT_POLICY, *POLICIES]),
    default="vllm-default,slai",
    show_default=True,
    help="vllm-default and/or llmsched policies.",
)
@click.option("--qps", type=POSITIVE, required=True, help="Mean Poisson arrival rate (requests/s).")
@click.option(
    "--trace",
    type=click.Path(dir_okay=False),
    default="sharegpt-v3",
    show_default=True,
    help="Trace: sharegpt-v3 (ShareGPT V3, Mistral tokenizer), paper, or a CSV file.",
)
@click.option("--num-requests", type=POSITIVE_INT, default=100, show_default=True)
@click.option("--tiers", type=str, default=None, help='SLO tiers, e.g. "paying:0.05:tbt=0.1,free:0.95:tbt=0.5".')
@click.option(
    "--token-budget", type=POSITIVE_INT, default=512, show_default=True, help="max_num_batched_tokens, every policy."
)
@click.option("--max-num-seqs", type=POSITIVE_INT, default=128, show_default=True)
@click.option("--kv-cache-gib", type=POSITIVE, default=2.0, show_default=True, help="VLLM_CPU_KVCACHE_SPACE.")
@click.option("--time-limit", type=POSITIVE, default=None, help="Stop each run after this many seconds.")
@click.option("--seed", type=SEED, default=42, show_default=True)
@click.option(
    "--compile",
    "use_compile",
    is_flag=True,
    help="Use torch.compile (vLLM's default). Shapes compile lazily on first use, which made the first 30-60 s of "
    "a run 50-100x slower here; the default, eager mode, keeps step times comparable between policies.",
)
@click.option(
    "--steps-out",
    type=click.Path(file_okay=False),
    default=None,
    callback=writable_dir,
    help="Write each step's batch shape and time to DIR/<policy>.csv (compare with a batch-time model).",
)
@click.option(
    "--run-log",
    type=click.Path(file_okay=False),
    default=None,
    help="Write each run (requests, token times, every step) to DIR/<policy>.json, for `sim.replay`.",
)
@click.option(
    "--perf-model",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="This engine's batch-time model (profile CSV or fitted JSON), for policies that size batches by time.",
)
@click.option(
    "--policy-option",
    "policy_options",
    type=PolicyOption(),
    multiple=True,
    help="[POLICY:]KEY=VALUE, repeatable: a knob of POLICY (or of every policy run), e.g. deadline-sized:cap_s=2.5 "
    "(knobs: docs/<policy>.md).",
)
@click.option("--prefix-caching", is_flag=True, help="Turn on vLLM's automatic prefix caching (off by default).")
@click.option(
    "--prefix-repetition-num-prefixes",
    "num_prefixes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Shared prompt prefixes to draw from (with --prefix-repetition-prefix-len).",
)
@click.option(
    "--prefix-repetition-prefix-len",
    "prefix_len",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Tokens of shared prefix each prompt starts with (vllm bench's prefix_repetition; 0: none).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"policies": {name: summary}} only.')
def command(
    model_dir: str,
    policies: list[str],
    qps: float,
    trace: str,
    num_requests: int,
    tiers: str | None,
    token_budget: int,
    max_num_seqs: int,
    kv_cache_gib: float,
    time_limit: float | None,
    seed: int,
    use_compile: bool,
    steps_out: str | None,
    run_log: str | None,
    perf_model: str | None,
    policy_options: tuple[tuple[str | None, str, object], ...],
    prefix_caching: bool,
    num_prefixes: int,
    prefix_len: int,
    as_json: bool,
) -> None:
    """Replay requests (Poisson arrivals, trace lengths, ignore_eos) into an in-process vLLM engine on the
    real clock, per policy, and print the same summary as `simulate`."""
    from llmsched.integrations.vllm.engine import EngineSetup, check_model_dir
    from llmsched.report.text import format_summary
    from llmsched.workload import WorkloadConfig, parse_tiers

    parse_tiers(tiers)
    knobs = policy_knobs(policy_options, policies)
    check_model_dir(model_dir)
    max_len = model_max_len(model_dir)
    wl = WorkloadConfig(trace=trace, num_requests=num_requests, qps=qps, arrival="poisson", tiers=tiers, seed=seed)
    if perf_model is None and any(n in POLICIES and needs_perf(n) for n in policies):
        raise UserError("--perf-model is required by a policy that sizes batches by time (see `llmsched profile`)")
    setup = EngineSetup(
        model_dir, token_budget, max_num_seqs, max_len, kv_cache_gib, enforce_eager=not use_compile, tiers=tiers,
        plugin={"perf_model": os.path.abspath(perf_model)} if perf_model else {},
        enable_prefix_caching=prefix_caching,
    )  # fmt: skip
    for folder in (steps_out, run_log):
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
    out: dict[str, dict] = {}
    for name in policies:
        path = os.path.join(steps_out, f"{name}.csv") if steps_out is not None else None
        log_path = os.path.join(run_log, f"{name}.json") if run_log is not None else None
        prefixes = (num_prefixes, prefix_len)
        own = replace(setup, plugin={**setup.plugin, "options": knobs[name]}) if knobs[name] else setup
        _, out[name] = run_policy(own, name, wl, max_len, time_limit, path, log_path, prefixes)
        if not as_json:
            click.echo(format_summary(out[name]))
            if "prefix_cache" in out[name]:
                pc = out[name]["prefix_cache"]
                rate = "-" if pc["hit_rate"] is None else f"{pc['hit_rate']:.1%}"
                click.echo(
                    f"prefix cache: {pc['prefix_cache_hits']} of {pc['prefix_cache_queries']} tokens hit ({rate}); "
                    f"after preemption {pc['prefix_cache_preempted_hits']} of {pc['prefix_cache_preempted_queries']}"
                )
            click.echo(f"mean schedule() time {out[name]['mean_schedule_ms']:.3f} ms per step\n")
    if as_json:
        click.echo(json.dumps({"policies": out}, sort_keys=True))
