"""The theory's bounds for a run's spec: its workload's means, its replicas' perf models and KV pools
(`llmsched.theory` holds the math)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache

from llmsched.errors import UserError
from llmsched.studies.spec import RunSpec, engine_config, max_model_len, perf_model, replica_specs
from llmsched.theory import Bound, Limits, Tile, WorkloadStats, cached_tile
from llmsched.workload import WorkloadConfig
from llmsched.workload.compose import build_workload
from llmsched.workload.request import REJECTED


def workload_stats(spec: RunSpec) -> WorkloadStats:
    """Means over the requests the spec's workload draws (the rate does not change them)."""
    return _stats(replace(spec.workload, qps=1.0), max_model_len(spec))


@lru_cache(maxsize=16)
def _stats(workload: WorkloadConfig, max_len: int) -> WorkloadStats:
    """Means over the requests the engine serves: those longer than `max_len` are rejected on arrival (a closed
    loop's: every turn it can send)."""
    built, _ = build_workload(workload, max_len)
    requests = [r for r in (built if isinstance(built, list) else built.expand()) if r.state != REJECTED]
    if not requests:
        raise UserError(f"every request of the trace is longer than max_model_len {max_len}")
    return WorkloadStats.of([r.prompt_len for r in requests], [r.decode_len for r in requests])


def limits(spec: RunSpec, tbt: float | None = None) -> Limits:
    """The KV pool less the admission watermark; the sequence limit only if the spec sets one."""
    cfg = engine_config(spec)
    pool = cfg.num_blocks * cfg.block_size * (1 - cfg.watermark)
    return Limits(pool, cfg.block_size, spec.max_num_seqs, tbt)


def replica_tile(spec: RunSpec, budget: int | None = None, tbt: float | None = None) -> Tile:
    """The optimal tile of a single-replica spec (or the best tile within a fixed budget)."""
    try:
        return cached_tile(perf_model(spec), workload_stats(spec), limits(spec, tbt), budget)
    except ValueError as e:
        raise UserError(f"{spec.model} on {spec.gpu}: {e}") from None


def spec_bound(spec: RunSpec, budgets: Sequence[int] = (512,), tbt: float | None = None) -> Bound:
    specs = replica_specs(spec)
    w = workload_stats(spec)
    tiles = tuple(replica_tile(s, None, tbt) for s in specs)
    fixed = {b: tuple(replica_tile(s, b, tbt) for s in specs) for b in budgets}
    return Bound(w, tiles, fixed)
