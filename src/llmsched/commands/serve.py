"""`llmsched serve`: vLLM replicas scheduling with an llmsched policy, behind an llmsched router, on Ray Serve."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import click

from llmsched.commands.options import POSITIVE_INT, ROUTER, SEED
from llmsched.errors import UserError
from llmsched.integrations.ray_serve.replica import SERVE_POLICIES


@click.command(name="serve")
@click.option("--model", "model_dir", type=str, required=True, help="Model folder (config.json, weights, tokenizer).")
@click.option("--replicas", type=POSITIVE_INT, default=1, show_default=True, help="Number of vLLM replicas.")
@click.option(
    "--router",
    type=ROUTER,
    default="round-robin",
    show_default=True,
    help="Which replica takes each request (llmsched.routers).",
)
@click.option(
    "--policy",
    type=click.Choice(SERVE_POLICIES),
    default="slai",
    show_default=True,
    help="Each replica's scheduler: an llmsched policy (the vLLM plugin) or vllm-default (vLLM's own).",
)
@click.option(
    "--perf-model",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The replicas' batch-time model (profile CSV or fitted JSON), for policies that size batches by time.",
)
@click.option("--ray-address", type=str, default=None, help="Join this Ray cluster (default: start a local one).")
@click.option("--host", type=str, default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--max-num-seqs", type=POSITIVE_INT, default=16, show_default=True, help="Per replica, unless overridden."
)
@click.option("--token-budget", type=POSITIVE_INT, default=512, show_default=True, help="Tokens per step, per replica.")
@click.option("--kv-cache-gib", type=POSITIVE_INT, default=1, show_default=True, help="CPU KV pool per replica (GiB).")
@click.option(
    "--replica-options",
    type=str,
    multiple=True,
    help="Once per replica, in rank order: KEY=VALUE,... over the flags above (max_num_seqs, token_budget, "
    "kv_cache_gib, num_blocks, max_model_len, capacity [tokens/s; default measured], cpus [e.g. 0-1], "
    "prefix_caching [on/off]).",
)
@click.option(
    "--prefix-caching",
    is_flag=True,
    help="vLLM's automatic prefix caching in every replica (unless its --replica-options say off); each replica "
    "reports vLLM's prefix_cache_queries/hits counters (GET /llmsched/routing).",
)
@click.option("--tiers", type=str, default=None, help='SLO tiers for the policy, e.g. "paying:0.5:tbt=0.1,free:0.5".')
@click.option(
    "--cpus-per-replica", type=POSITIVE_INT, default=1, show_default=True, help="Ray CPUs (and cores) per replica."
)
@click.option("--compile", "compile_", is_flag=True, help="Let vLLM compile the model (slower start, faster steps).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random routers.")
def command(
    model_dir: str,
    replicas: int,
    router: str,
    policy: str,
    perf_model: str | None,
    ray_address: str | None,
    host: str,
    port: int,
    max_num_seqs: int,
    token_budget: int,
    kv_cache_gib: int,
    replica_options: tuple[str, ...],
    prefix_caching: bool,
    tiers: str | None,
    cpus_per_replica: int,
    compile_: bool,
    seed: int,
) -> None:
    """Serve an OpenAI-style /v1/completions on Ray Serve until Ctrl-C or SIGTERM."""
    cfg = config_from(
        model_dir, replicas, router, policy, max_num_seqs, token_budget, kv_cache_gib, replica_options, tiers,
        cpus_per_replica, not compile_, seed, prefix_caching, perf_model,
    )  # fmt: skip
    run(cfg, host, port, ray_address)


def config_from(
    model_dir: str,
    replicas: int,
    router: str,
    policy: str,
    max_num_seqs: int = 16,
    token_budget: int = 512,
    kv_cache_gib: int = 1,
    replica_options: tuple[str, ...] = (),
    tiers: str | None = None,
    cpus_per_replica: int = 1,
    enforce_eager: bool = True,
    seed: int = 0,
    prefix_caching: bool = False,
    perf_model: str | None = None,
) -> Any:
    """Every flag checked (one-line errors) before anything starts; click checked each value's type and range."""
    from llmsched.integrations.ray_serve.replica import ReplicaOptions
    from llmsched.policies import POLICIES, needs_perf

    if perf_model is None and policy in POLICIES and needs_perf(policy):
        raise UserError(f"--policy {policy} sizes batches by time: give --perf-model (see `llmsched profile`)")
    if tiers:
        from llmsched.workload.tiers import parse_tiers

        parse_tiers(tiers)
    base = ReplicaOptions(
        max_num_seqs=max_num_seqs, token_budget=token_budget, kv_cache_gib=kv_cache_gib, prefix_caching=prefix_caching
    )
    if replica_options and len(replica_options) != replicas:
        raise UserError(
            f"--replica-options is given {len(replica_options)} times, expected once per replica ({replicas})"
        )
    options = tuple(ReplicaOptions.parse(t, base) for t in replica_options) or (base,) * replicas
    cpus = cpus_per_replica
    from llmsched.integrations.vllm.engine import check_model_dir

    check_model_dir(model_dir)
    try:
        import ray.serve  # noqa: F401
        import vllm  # noqa: F401
    except ImportError as e:
        raise UserError(f"llmsched serve needs Ray Serve and vLLM: pip install 'llmsched[serve]' ({e})") from None
    from llmsched.integrations.ray_serve.app import ServeConfig

    return ServeConfig(
        model_dir, options, router, policy, tiers, float(cpus), enforce_eager, seed,
        perf_model=os.path.abspath(perf_model) if perf_model else None,
    )  # fmt: skip


def run(cfg: Any, host: str, port: int, ray_address: str | None) -> None:
    """Serve until SIGINT or SIGTERM, then stop Serve and Ray. A signal while the app starts interrupts the start-up
    (then exit status 130, as for Ctrl-C anywhere); once it is up, a signal stops it cleanly (exit status 0)."""
    from llmsched.integrations.ray_serve import server

    stop = threading.Event()
    up = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            return  # a second signal while stopping: keep stopping
        stop.set()
        if not up.is_set():
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    served = None
    try:
        try:
            served = server.start(cfg, host, port, ray_address)
        except RuntimeError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"the app did not start: {first} (see /tmp/ray/session_latest/logs)") from None
        up.set()
        click.echo(
            f"llmsched serve: listening on {served.url}/v1/completions ({len(cfg.replicas)} replicas, router "
            f"{cfg.router}, policy {cfg.policy}; up in {served.startup_s:.1f} s); Ctrl-C or SIGTERM stops",
            err=True,
        )
        while not stop.wait(0.5):
            pass
        click.echo("llmsched serve: stopping", err=True)
    finally:
        stop.set()
        server.stop(served)
        for s, handler in previous.items():
            signal.signal(s, handler)
