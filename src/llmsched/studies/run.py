"""Run a spec on the simulator: one engine, or a cluster of replicas behind a router, then the summary."""

from __future__ import annotations

from llmsched.metrics import summarize
from llmsched.metrics.summary import prefix_cache_stats
from llmsched.perf.perturbed import Perturbed
from llmsched.policies import make_policy, needs_perf
from llmsched.records import RunResult
from llmsched.routers import make_router
from llmsched.sim.cluster import Cluster, ClusterResult
from llmsched.sim.engine import SimEngine
from llmsched.studies.bounds import replica_tile
from llmsched.studies.spec import (
    RunSpec,
    batch_times_label,
    engine_config,
    max_model_len,
    perf_model,
    replica_specs,
    validate,
)
from llmsched.workload.build import resolved_arrival
from llmsched.workload.compose import build_workload, offered_rate
from llmsched.workload.sessions import Sessions
from llmsched.workload.trace import TraceRow


def replica_engine(spec: RunSpec) -> SimEngine:
    """An engine with its own policy object; RAD gets the optimal tile of its GPU (or --token-budget), a policy that
    sizes batches by time gets the engine's batch-time model (host overhead included)."""
    options = dict(spec.policy_options)
    if spec.policy == "rad" and "tile" not in options:
        options["tile"] = spec.token_budget or replica_tile(spec).tokens
    perf = perf_model(spec)
    if needs_perf(spec.policy) and "perf" not in options:
        options["perf"] = Perturbed(perf, added_s=spec.batch_overhead_s) if spec.batch_overhead_s else perf
    return SimEngine(engine_config(spec), make_policy(spec.policy, **options), perf)


def run(spec: RunSpec, rows: list[TraceRow] | None = None) -> tuple[RunResult, dict]:
    validate(spec)
    requests, tiers = build_workload(spec.workload, max_model_len(spec), rows)
    specs = replica_specs(spec)
    if spec.replicas is None:
        result = replica_engine(spec).run(requests)
    else:
        engines = [replica_engine(s) for s in specs]
        kv = [e.total_blocks * e.block_size for e in engines]
        cache = [t + e.cfg.kv_offloading_blocks * e.block_size for t, e in zip(kv, engines, strict=True)]
        capacities = [replica_tile(s).tokens_per_s for s in specs]
        router = make_router(spec.router, capacities, spec.workload.seed, cache, kv)
        result = Cluster(engines, router).run(requests)
    summary = summarize(result, tiers, spec.ttft_slo)
    # A replayed trace runs at its own rate (times --rate-scale), not at --qps.
    qps = offered_rate(requests) if resolved_arrival(spec.workload) == "trace" else spec.workload.qps
    summary = {"policy": spec.policy, "qps": qps, **summary, "batch_times": batch_times_label(spec)}
    if isinstance(requests, Sessions):  # turns a session never sent: it ended (a rejection) or time ran out
        summary.update(sessions=len(requests.sessions), turns_not_sent=requests.num_turns - len(result.requests))
    if isinstance(result, ClusterResult):
        replicas = [{**r, "gpu": s.gpu} for r, s in zip(result.replica_summary(), specs, strict=True)]
        if result.prefix_caching:
            for row, part in zip(replicas, result.replicas, strict=True):
                row.update(prefix_cache_stats(part.requests, part.block_size))
        summary.update(router=spec.router, replicas=replicas)
    return result, summary
