"""A simulated run as a picklable spec (the unit that simulate, compare and capacity execute), checked before any
run starts, and what follows from it: replicas, engine settings, batch-time model."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

from llmsched.errors import UserError
from llmsched.perf import GPUS, get_gpu, get_model, kv_blocks
from llmsched.perf.base import PerfModel
from llmsched.perf.roofline import efficiency_for, estimated_model
from llmsched.perf.specs import GIB
from llmsched.policies import make_policy, policy_defaults
from llmsched.routers import check_router
from llmsched.sim.engine import EngineConfig
from llmsched.workload import WorkloadConfig, parse_tiers
from llmsched.workload.build import check_rate_scale, resolved_arrival
from llmsched.workload.compose import check_workload

MAX_TP = 8  # tensor parallelism within one node: the model has no inter-node link


@dataclass(frozen=True)
class RunSpec:
    policy: str = "sarathi"
    policy_options: tuple[tuple[str, object], ...] = ()
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    model: str = "mistral-7b"
    gpu: str = "rtx6000ada"
    tensor_parallel: int = 1  # GPUs per replica (vLLM's --tensor-parallel-size)
    perf_model: str | None = None  # a profile CSV or fitted-model JSON; None: the catalog's model
    token_budget: int | None = None  # None: the policy's default
    max_num_seqs: int | None = None
    num_blocks: int | None = None  # None: from GPU memory, utilisation and the model
    block_size: int = 16
    max_model_len: int | None = None  # None: the model's context; longer requests are rejected one by one
    time_limit: float | None = None
    batch_overhead_s: float = 0.0
    ttft_slo: float | None = None
    replicas: str | None = None  # "4" or "rtx6000ada:2,a100-80gb:2"; None: one replica on `gpu`
    router: str = "round-robin"  # see llmsched.routers.ROUTERS
    enable_prefix_caching: bool = False  # vLLM's automatic prefix caching (hits need a workload with prefix ids)
    kv_offloading_size: float | None = None  # GiB of host memory per replica for a CPU KV tier (vLLM's native one)

    def at_qps(self, qps: float) -> RunSpec:
        return replace(self, workload=replace(self.workload, qps=qps))


def validate(spec: RunSpec) -> None:
    """Everything a user can get wrong, checked before any run starts."""
    model = get_model(spec.model)
    get_gpu(spec.gpu)
    if not 1 <= spec.tensor_parallel <= MAX_TP:
        raise UserError(f"--tensor-parallel-size is {spec.tensor_parallel}, expected 1 to {MAX_TP} (GPUs of one node)")
    why = model.check_tp(spec.tensor_parallel)
    if why:
        raise UserError(f"--tensor-parallel-size {spec.tensor_parallel}: {why}")
    if spec.perf_model and spec.tensor_parallel > 1:
        raise UserError("--perf-model describes one GPU's batches; profile the tensor-parallel replica instead")
    make_policy(spec.policy, **dict(spec.policy_options))
    if spec.perf_model:
        perf_model(spec)
    parse_tiers(spec.workload.tiers)
    check_workload(spec.workload)
    for name in ("token_budget", "max_num_seqs", "num_blocks", "block_size", "max_model_len"):
        value = getattr(spec, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} is {value}, expected a positive integer")
    if spec.batch_overhead_s < 0:
        raise UserError(f"--batch-overhead-ms is {spec.batch_overhead_s * 1e3:g}, expected >= 0")
    if spec.time_limit is not None and spec.time_limit <= 0:
        raise UserError(f"--time-limit is {spec.time_limit}, expected positive seconds")
    if spec.workload.seed < 0:
        raise UserError(f"--seed is {spec.workload.seed}, expected a non-negative integer")
    if spec.ttft_slo is not None and not spec.ttft_slo > 0:
        raise UserError(f"--ttft-slo is {spec.ttft_slo}, expected positive seconds")
    arrival = resolved_arrival(spec.workload)
    if arrival != "trace" and not spec.workload.qps > 0:
        raise UserError(f"--qps is {spec.workload.qps}, expected a positive number of requests per second")
    check_rate_scale(spec.workload, arrival)
    check_router(spec.router)
    if spec.kv_offloading_size is not None:
        if not spec.kv_offloading_size > 0:
            raise UserError(f"--kv-offloading-size is {spec.kv_offloading_size:g}, expected positive GiB")
        if not spec.enable_prefix_caching:
            raise UserError("--kv-offloading-size needs --prefix-caching (the CPU tier holds prefix-cached blocks)")
    for replica in replica_specs(spec):
        engine_config(replica)  # the model fits on each replica's GPUs


def check_rate_varies(spec: RunSpec) -> None:
    """For the commands that vary the arrival rate: arrivals replayed from the trace would not follow it."""
    if resolved_arrival(spec.workload) == "trace":
        raise UserError(
            "arrivals replay the trace's arrived_at, so the rate cannot vary: give --arrival poisson-capped (or "
            "poisson, gamma) to draw arrivals at each QPS"
        )


def replica_specs(spec: RunSpec) -> list[RunSpec]:
    """One single-replica spec per replica of `spec`."""
    if spec.replicas is None:
        return [spec]
    gpus = parse_replicas(spec.replicas, spec.gpu)
    if spec.perf_model and set(gpus) != {spec.gpu}:
        raise UserError("--perf-model describes one GPU; with it, give --replicas as a count")
    return [replace(spec, gpu=g, replicas=None) for g in gpus]


def perf_model(spec: RunSpec) -> PerfModel:
    """--perf-model if given, else the built-in fitted entry for this model and GPU (on one GPU), else the roofline
    with the efficiency measured on this GPU or carried from the H100's (`roofline.efficiency_for`)."""
    if spec.perf_model:
        return _loaded_perf_model(spec.perf_model, get_model(spec.model).name)
    builtin = _builtin_perf_model(spec.model, spec.gpu) if spec.tensor_parallel == 1 else None
    return builtin or estimated_model(get_model(spec.model), get_gpu(spec.gpu), spec.tensor_parallel)


def batch_times_label(spec: RunSpec) -> str:
    """'measured: ...' or 'estimated: ...', where the batch times of every replica of `spec` come from (estimated
    if any replica's are)."""
    labels = {perf_provenance(s) for s in replica_specs(spec)}
    kind = "estimated" if any(k == "estimated" for k, _ in labels) else "measured"
    return f"{kind}: " + "; ".join(sorted(text for _, text in labels))


def perf_provenance(spec: RunSpec) -> tuple[str, str]:
    """("measured" or "estimated", where the batch times come from) for a single-replica spec: measured where a
    profile of this model on this GPU (one GPU) stands behind them, estimated where a spec sheet does."""
    if spec.perf_model:
        return "measured", f"fitted to {spec.perf_model}"
    if spec.tensor_parallel == 1 and _builtin_perf_model(spec.model, spec.gpu) is not None:
        return "measured", f"fitted to llmsched's profile of {spec.model} on {spec.gpu}"
    e = efficiency_for(spec.gpu)
    if spec.tensor_parallel == 1 and e.gpu == spec.gpu and spec.model in e.models:
        return "measured", f"roofline fitted to {e.source}"
    tp = f"; TP {spec.tensor_parallel} over {get_gpu(spec.gpu).link}" if spec.tensor_parallel > 1 else ""
    return "estimated", f"roofline of the {spec.gpu} spec sheet with the efficiency of {e.source}{tp}"


@lru_cache(maxsize=8)
def _builtin_perf_model(model: str, gpu: str) -> PerfModel | None:
    from llmsched.perf.fitted import builtin_model

    return builtin_model(model, gpu)


@lru_cache(maxsize=8)
def _loaded_perf_model(path: str, model: str) -> PerfModel:
    from llmsched.perf.fitted import load_perf_model

    return load_perf_model(path, model)


def max_model_len(spec: RunSpec) -> int:
    """--max-model-len, else the model's context."""
    return spec.max_model_len or get_model(spec.model).max_len


def engine_config(spec: RunSpec) -> EngineConfig:
    model, gpu = get_model(spec.model), get_gpu(spec.gpu)
    defaults = policy_defaults(spec.policy)
    return EngineConfig(
        num_blocks=spec.num_blocks or kv_blocks(model, gpu, block_size=spec.block_size, tp=spec.tensor_parallel),
        token_budget=spec.token_budget or defaults["token_budget"],
        max_num_seqs=spec.max_num_seqs or defaults["max_num_seqs"],
        block_size=spec.block_size,
        max_model_len=max_model_len(spec),
        time_limit=spec.time_limit,
        batch_overhead_s=spec.batch_overhead_s,
        enable_prefix_caching=spec.enable_prefix_caching,
        **offload_config(spec),
    )


def offload_config(spec: RunSpec) -> dict:
    """The CPU tier's blocks and a block's load time, as vLLM sizes the tier: --kv-offloading-size GiB (summed over
    the replica's tensor-parallel ranks) over the full model's KV bytes per block; each rank loads its shard over its
    own host link (the GPU's `host_bw`)."""
    if spec.kv_offloading_size is None:
        return {}
    model, gpu = get_model(spec.model), get_gpu(spec.gpu)
    block_bytes = spec.block_size * model.kv_bytes_per_token
    if not gpu.host_bw > 0:
        raise UserError(f"--kv-offloading-size: GPU {gpu.name} has no host link bandwidth in the catalog")
    blocks = int(spec.kv_offloading_size * GIB // block_bytes)
    if blocks < 1:
        raise UserError(f"--kv-offloading-size {spec.kv_offloading_size:g} GiB holds no KV block of {spec.model}")
    shard = block_bytes / min(spec.tensor_parallel, model.kv_heads)
    return {"kv_offloading_blocks": blocks, "load_s_per_block": shard / gpu.host_bw}


def parse_replicas(text: str, default_gpu: str) -> list[str]:
    """'4' -> four replicas of `default_gpu`; 'rtx6000ada:2,a100-80gb:2' -> GPUs by name (exact, as --gpu)."""
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise UserError(f"--replicas is {text!r}, expected at least 1 replica")
        return [default_gpu] * int(text)
    gpus: list[str] = []
    for part in text.split(","):
        name, _, count = part.strip().partition(":")
        if name not in GPUS:
            raise UserError(
                f"--replicas: {part.strip()!r} names no GPU, expected N or GPU[:N],... with GPU one of "
                f"{', '.join(GPUS)}"
            )
        if count and (not count.isdigit() or int(count) < 1):
            raise UserError(f"--replicas: count {count!r} of {name!r} is not a positive integer")
        gpus += [name] * (int(count) if count else 1)
    return gpus
