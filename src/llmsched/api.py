"""llmsched from Python (a notebook, a script): a workload (`WorkloadConfig`), a policy, a cluster, a run, a sweep
over QPS, a capacity search and the plots, over the code the CLI runs (`studies.spec.RunSpec`, `studies.run.run`,
`studies.grid.run_grid`, `studies.capacity.search`, `report.plots`). See docs/python-api.md.

Results are dataclasses; each has `to_records()`, a list of flat dicts that `pandas.DataFrame(...)` takes as is.
Metric names are `vllm bench serve`'s (median_ttft_ms, p99_itl_ms, request_goodput, ...). Bad input raises
`llmsched.errors.UserError` with the same one-line message the CLI prints, before anything runs. Names that would
shadow a subpackage of llmsched once it is imported (workload, policies, routers) are not used.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmsched.errors import UserError
from llmsched.metrics import Detail
from llmsched.perf import GPUS, MODELS
from llmsched.policies import POLICIES, make_policy
from llmsched.records import RunResult
from llmsched.routers import ROUTERS, check_router
from llmsched.sim.cluster import ClusterResult
from llmsched.studies.capacity import Point
from llmsched.studies.capacity import search as _search
from llmsched.studies.executor import Executor
from llmsched.studies.grid import flatten, run_grid
from llmsched.studies.run import run as _run
from llmsched.studies.slo import parse_slo
from llmsched.studies.spec import RunSpec, parse_replicas, validate
from llmsched.workload import WorkloadConfig
from llmsched.workload.request import FINISHED

__all__ = [
    "Capacity",
    "ClusterChoice",
    "PolicyChoice",
    "Run",
    "RunSpec",
    "Sweep",
    "UserError",
    "WorkloadConfig",
    "capacity",
    "cluster",
    "gpu_names",
    "model_names",
    "plot",
    "policy",
    "policy_names",
    "router_names",
    "run",
    "spec",
    "sweep",
]


def policy_names() -> list[str]:
    """Names of the scheduling policies."""
    return list(POLICIES)


def router_names() -> list[str]:
    """Names of the routers of a cluster."""
    return list(ROUTERS)


def gpu_names() -> list[str]:
    """Names of the catalog's GPUs."""
    return list(GPUS)


def model_names() -> list[str]:
    """Names of the catalog's models (a Hugging Face model directory is accepted too)."""
    return list(MODELS)


@dataclass(frozen=True)
class PolicyChoice:
    """A policy by name, with options for its constructor (e.g. sarathi's order="spf")."""

    name: str
    options: tuple[tuple[str, object], ...] = ()


def policy(name: str, **options: object) -> PolicyChoice:
    """A scheduling policy (one of `policy_names()`), checked now: an unknown name or option raises UserError."""
    make_policy(name, **options)
    return PolicyChoice(name, tuple(sorted(options.items())))


@dataclass(frozen=True)
class ClusterChoice:
    """Replicas behind a router: `replicas` as the CLI's --replicas ("4" or "rtx6000ada:2,a100-80gb:2")."""

    replicas: str
    router: str = "round-robin"


def cluster(replicas: int | str | Mapping[str, int], router: str = "round-robin") -> ClusterChoice:
    """Replicas behind a router (one of `router_names()`): a count of the run's GPU, "GPU:N,..." or {GPU: N}."""
    if isinstance(replicas, Mapping):
        text = ",".join(f"{g}:{n}" for g, n in replicas.items())
    else:
        text = str(replicas)
    parse_replicas(text, next(iter(GPUS)))
    check_router(router)
    return ClusterChoice(text, router)


def spec(
    policy: str | PolicyChoice = "sarathi",
    workload: WorkloadConfig | None = None,
    *,
    cluster: ClusterChoice | None = None,
    model: str = "mistral-7b",
    gpu: str = "rtx6000ada",
    perf_model: str | None = None,
    token_budget: int | None = None,
    max_num_seqs: int | None = None,
    num_blocks: int | None = None,
    block_size: int = 16,
    time_limit: float | None = None,
    batch_overhead_s: float = 0.0,
    ttft_slo: float | None = None,
    enable_prefix_caching: bool = False,
) -> RunSpec:
    """One simulated run, checked now (UserError). The engine settings are the CLI's flags of the same names
    (`enable_prefix_caching`: --prefix-caching); None means the policy's default (token_budget, max_num_seqs) or
    what follows from the GPU (num_blocks)."""
    choice = policy if isinstance(policy, PolicyChoice) else PolicyChoice(policy)
    s = RunSpec(
        policy=choice.name,
        policy_options=choice.options,
        workload=workload if workload is not None else WorkloadConfig(),
        model=model,
        gpu=gpu,
        perf_model=perf_model,
        token_budget=token_budget,
        max_num_seqs=max_num_seqs,
        num_blocks=num_blocks,
        block_size=block_size,
        time_limit=time_limit,
        batch_overhead_s=batch_overhead_s,
        ttft_slo=ttft_slo,
        replicas=cluster.replicas if cluster else None,
        router=cluster.router if cluster else RunSpec.router,
        enable_prefix_caching=enable_prefix_caching,
    )
    validate(s)
    return s


@dataclass(frozen=True)
class Run:
    """A finished run: its spec, its summary (`vllm bench serve` names; per tier under "tiers", per replica under
    "replicas" for a cluster) and the engine's record (every request with its token times, every batch)."""

    spec: RunSpec
    summary: dict
    result: RunResult = field(repr=False)

    def to_records(self) -> list[dict]:
        """One row per request: its lengths, tier, outcome, TTFT, end-to-end latency and largest gap between tokens
        (ms; None where it did not finish), preemptions, the prompt tokens served from the prefix cache (None
        without prefix caching, or never admitted), and the replica that served it in a cluster."""
        replica_of = {}
        if isinstance(self.result, ClusterResult):
            replica_of = {r.id: i for i, rr in enumerate(self.result.replicas) for r in rr.requests}
        rows = []
        for r in self.result.requests:
            t, done = r.token_times, r.state == FINISHED
            gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
            row = {
                "id": r.id,
                "arrival_s": r.arrival,
                "tier": r.tier,
                "prompt_tokens": r.prompt_len,
                "decode_tokens": r.decode_len,
                "outcome": r.state,
                "reason": r.reason,
                "ttft_ms": (t[0] - r.arrival) * 1e3 if done else None,
                "e2el_ms": (t[-1] - r.arrival) * 1e3 if done else None,
                "max_itl_ms": max(gaps) * 1e3 if gaps else None,
                "preemptions": r.preemptions,
                "generated_tokens": r.generated,
                "cached_tokens": r.cached_tokens,
            }
            if replica_of:
                row["replica"] = replica_of.get(r.id)
            rows.append(row)
        return rows


def run(spec: RunSpec) -> Run:
    """Simulate one spec (made with `spec()`) in this process."""
    result, summary = _run(spec)
    return Run(spec, summary, result)


@dataclass(frozen=True)
class Sweep:
    """Every spec at every QPS: one flat summary per run (per-tier metrics as "TIER.metric"), and at one QPS the
    TTFT/TBT distributions and TTFT by prompt length that `plot` draws."""

    rows: list[dict]
    details: list[Detail] = field(repr=False)

    def to_records(self) -> list[dict]:
        return [dict(r) for r in self.rows]


def _executor(workers: int | None) -> Executor:
    return Executor("process", workers)


def sweep(
    specs: RunSpec | Sequence[RunSpec],
    qps: Sequence[float],
    *,
    detail_qps: float | None = None,
    workers: int | None = None,
) -> Sweep:
    """Run each spec at each QPS (in parallel: `workers` processes, default all cores; 1 runs here), as
    `llmsched compare`. The distributions are kept at `detail_qps` (default: the middle of `qps`)."""
    specs = [specs] if isinstance(specs, RunSpec) else list(specs)
    if not qps or any(not q > 0 for q in qps):
        raise UserError(f"qps is {list(qps)}, expected positive rates")
    with _executor(workers) as ex:
        summaries, details = run_grid(specs, [float(q) for q in qps], ex, detail_qps, progress=False)
    return Sweep([flatten(s) for s in summaries], details)


@dataclass(frozen=True)
class Capacity:
    """The highest QPS at which a policy's runs met the SLO, and every run of the search."""

    policy: str
    qps: float
    slo: str
    points: list[Point] = field(repr=False)

    def to_records(self) -> list[dict]:
        """One row per run of the search, by QPS."""
        return [
            {
                "policy": self.policy,
                "qps": p.qps,
                "meets_slo": p.passed,
                "why_not": p.reason,
                "median_ttft_ms": p.summary.get("median_ttft_ms"),
                "p99_ttft_ms": p.summary.get("p99_ttft_ms"),
                "queue_growth": p.growth,
            }
            for p in sorted(self.points, key=lambda p: p.qps)
        ]


def capacity(
    specs: RunSpec | Sequence[RunSpec],
    slo: str | None = None,
    *,
    start_qps: float = 2.0,
    granularity: float = 0.025,
    max_rounds: int = 12,
    workers: int | None = None,
) -> list[Capacity]:
    """Bisect on QPS for each spec's capacity under `slo` (the CLI's --slo; None: the paper's
    "ttft_p50<=0.5,tbt_p99<=tier"), as `llmsched capacity` (docs/capacity.md)."""
    specs = [specs] if isinstance(specs, RunSpec) else list(specs)
    target = parse_slo(slo)
    with _executor(workers) as ex:
        searches = _search(
            specs,
            target,
            ex,
            start_qps=start_qps,
            granularity=granularity,
            max_rounds=max_rounds,
            progress=False,
        )
    return [Capacity(s.policy, s.capacity, str(target), s.points) for s in searches]


def plot(sweep: Sweep, out: str | Path) -> list[Path]:
    """The PNGs of `llmsched compare` for a sweep, written to the folder `out` (created): TTFT and TBT against QPS,
    SLO attainment, and at the detail QPS the CDFs and TTFT by prompt length. Show one in a notebook with
    `IPython.display.Image(path)`."""
    import matplotlib

    # report.plots draws off-screen (it selects the Agg backend): a notebook's own backend is put back after.
    backend = matplotlib.get_backend() if "matplotlib.pyplot" in sys.modules else None
    from llmsched.report.plots import plot_details, plot_vs_qps

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return plot_vs_qps(sweep.rows, folder) + plot_details(sweep.details, folder)
    finally:
        if backend is not None and backend.lower() != "agg":
            import matplotlib.pyplot as plt

            plt.switch_backend(backend)
