"""What a result file says about the run that made it: one dict built from a RunSpec and the command line, written
into every JSON (under "metadata"), every CSV (leading `# key: value` lines, read with
`pandas.read_csv(path, comment="#")`) and every HTML report (its first table)."""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import replace
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from llmsched.errors import UserError
from llmsched.perf import get_model
from llmsched.studies.spec import RunSpec, engine_config, perf_model, replica_specs
from llmsched.workload import parse_tiers
from llmsched.workload.build import resolved_arrival
from llmsched.workload.sessions import SESSIONS, sessions_path
from llmsched.workload.trace import BUILTIN_TRACES, DEFAULT_TRACE, trace_path

HASH_CHARS = 12  # leading hex digits of a file's sha256 that name its content


@lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:HASH_CHARS]


def file_hash(path: str | Path) -> str:
    """The first HASH_CHARS hex digits of the file's sha256 (cached per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_mtime_ns, st.st_size)


def _version() -> str:
    try:
        return version("llmsched")  # what `llmsched --version` prints
    except PackageNotFoundError:
        return "unknown (not installed)"


def trace_of(trace: str | None) -> dict:
    if trace == SESSIONS:
        path = sessions_path()
        return {"name": f"built-in {SESSIONS} ({path.name})", "sha256": file_hash(path)}
    path = trace_path(trace)
    builtin = trace is None or trace in BUILTIN_TRACES
    name = f"built-in {trace or DEFAULT_TRACE} ({path.name})" if builtin else str(trace)
    try:
        return {"name": name, "sha256": file_hash(path)}
    except OSError as e:
        raise UserError(f"{path}: cannot read trace ({e.strerror or e})") from None


def _perf_model(specs: list[RunSpec]) -> dict:
    """The batch-time model: a file (every replica's), or the built-in models of the replicas' GPUs."""
    if specs[0].perf_model:
        return {"file": specs[0].perf_model, "sha256": file_hash(specs[0].perf_model)}
    names = dict.fromkeys(getattr(m, "name", None) or type(m).__name__ for m in map(perf_model, specs))
    return {"builtin": list(names)}


def settings(spec: RunSpec) -> dict:
    """The run's settings as flat scalars (CSV columns): model, hardware, engine limits and workload."""
    wl = spec.workload
    specs = replica_specs(spec)
    cfg = engine_config(specs[0])
    trace = trace_of(wl.trace)
    return {
        "model": get_model(spec.model).name,
        "gpu": ",".join(s.gpu for s in specs),
        "router": spec.router if spec.replicas is not None else None,
        "kv_blocks": sum(engine_config(s).num_blocks for s in specs),
        "block_size": spec.block_size,
        "token_budget": cfg.token_budget,
        "max_num_seqs": cfg.max_num_seqs,
        "time_limit_s": spec.time_limit,
        "batch_overhead_ms": spec.batch_overhead_s * 1e3,
        "trace": trace["name"],
        "trace_sha256": trace["sha256"],
        "num_requests": wl.num_requests,
        "arrival": resolved_arrival(wl),
        "tiers": wl.tiers or "default",
        "seed": wl.seed,
    }


def describe(spec: RunSpec, argv: list[str] | None, slo: str | None = None, policies: list[str] | None = None) -> dict:
    """What was run: model, GPUs and their KV blocks, batch-time model, trace (name, content hash), arrivals,
    tiers, SLO, seed, engine limits per policy, llmsched's version and the command line. Nothing about the
    machine or the time, so the same command gives the same bytes."""
    wl = spec.workload
    names = policies or [spec.policy]
    engines = {}
    for name in names:
        cfg = engine_config(replace(spec, policy=name))
        engines[name] = {"token_budget": cfg.token_budget, "max_num_seqs": cfg.max_num_seqs}
    specs = replica_specs(spec)
    blocks = [engine_config(s).num_blocks for s in specs]
    arrival = {"process": resolved_arrival(wl)}
    if arrival["process"] == "gamma":
        arrival["burstiness"] = wl.burstiness
    tiers = [
        {"name": t.name, "share": t.share, "tbt_s": t.tbt, **({"ttft_s": t.ttft} if t.ttft is not None else {})}
        for t in parse_tiers(wl.tiers)
    ]
    return {
        "llmsched_version": _version(),
        "command": None if argv is None else shlex.join(["llmsched", *argv]),
        "model": get_model(spec.model).name,
        "gpu": ",".join(s.gpu for s in specs),
        "kv_blocks": sum(blocks),
        "replicas": [
            {"replica": i, "gpu": s.gpu, "kv_blocks": k} for i, (s, k) in enumerate(zip(specs, blocks, strict=True))
        ],
        "router": spec.router if spec.replicas is not None else None,
        "block_size": spec.block_size,
        "perf_model": _perf_model(specs),
        "policies": engines,
        "time_limit_s": spec.time_limit,
        "batch_overhead_ms": spec.batch_overhead_s * 1e3,
        "trace": trace_of(wl.trace),
        "num_requests": wl.num_requests,
        "arrival": arrival,
        "tiers": tiers,
        "slo": slo,
        "ttft_slo_s": spec.ttft_slo,
        "seed": wl.seed,
    }
