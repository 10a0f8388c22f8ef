"""Prefix caching on a simulated cluster: the Mooncake conversation trace on 4 and 8 replicas of Llama-3.1-8B (128k
context) on H100 80GB, round-robin and a load router against the routers that see the cache, prefix caching off and
on, and SLAI's waiting-queue keys (whole prompt, uncached part, longest prefix first) behind the best router.
With `--offload GIB,...` the routers also run with a CPU KV tier of that many GiB per replica under the prefix cache
(vLLM's --kv-offloading-size, native backend); their rows split the hit rate by tier (device, host) and the targets
are computed per size, on the combined hit rate. The sizes a real node has: a DGX H100's 2 TB of host memory shared
by its 8 GPUs is 256 GiB per GPU; 64 GiB is a quarter of that, what a node that keeps most of its memory for other
work (or a smaller cloud VM share) leaves.

Prints JSON with one row per run. Each row has median and p99 TTFT, TPOT, the prefix-cache hit rate (tokens and
blocks), completed requests, and whether the queue stayed bounded. It also has the run's seconds on one core
(process CPU time and wall; the machine may be shared, so say so when quoting them). Also printed: the trace's
ceilings, in the engine's 16-token blocks. `unbounded` is every prompt served by one replica whose cache never
evicts (the trace's README counts 36.6% in its 512-token blocks). `pooled_lru` is one LRU cache as large as the
cluster's KV pools together, fed each prompt whole at its arrival. It estimates what caches of that size allow
(estimated, not a bound: the engine pins running requests' blocks and frees them at completion). Last come the
targets' ratios.

    python benchmarks/prefix_cluster.py [--trace ../shared/traces/mooncake_conversation.jsonl] [--rate 1.0]
        [--replicas 4,8] [--policy slai] [--routers R,...] [--off R,...] [--no-keys] [--offload GIB,...]
        [--offload-only] [--workers 2]
        [--out benchmarks/results/prefix_cluster.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path

from llmsched.metrics import queue_growth, summarize
from llmsched.routers import make_router
from llmsched.sim.cluster import Cluster
from llmsched.studies.bounds import replica_tile
from llmsched.studies.executor import Executor
from llmsched.studies.run import replica_engine
from llmsched.studies.spec import RunSpec, max_model_len, replica_specs
from llmsched.workload import Request, WorkloadConfig, build_requests
from llmsched.workload.mooncake import MOONCAKE_BLOCK
from llmsched.workload.prefix import chain_ids

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake_conversation.jsonl"
MODEL, GPU, BLOCK = "llama-3.1-8b", "h100-80gb", 16
ROUTERS = ("round-robin", "least-work", "prefix-affinity", "cache-aware", "prefix-score")
PREFIX_ROUTERS = ROUTERS[2:]
KEYS = ("slai", "slai-uncached", "slai-lpm")


def load_mooncake(path: str, rate: float) -> list[Request]:
    """The Mooncake JSONL trace as the simulator reads it (`--trace FILE.jsonl --rate-scale RATE`): arrivals from
    `timestamp` divided by `rate`, requests over the model's context rejected."""
    cfg = WorkloadConfig(trace=path, rate_scale=rate)
    return build_requests(cfg, max_model_len(RunSpec(model=MODEL, gpu=GPU, workload=cfg)))[0]


def ceilings(requests: list[Request], pooled_tokens: list[int]) -> dict:
    """Hit rates (prompt tokens) of caches that see every prompt at its arrival, in the engine's accounting: whole
    16-token blocks, never a prompt's last token. Unbounded: no eviction. Pooled LRU: an LRU cache of that many
    tokens (trace blocks evicted least recently used, a prompt's last ones first)."""
    per = MOONCAKE_BLOCK // BLOCK
    queries = sum(r.prompt_len for r in requests)

    def hit(r: Request, cached: dict[int, int] | OrderedDict[int, int], chain: list[int]) -> int:
        cap, n = (r.prompt_len - 1) // BLOCK, 0
        for t, c in enumerate(chain):
            span = min(per, cap - t * per)
            if span <= 0:
                break
            have = cached.get(c, 0)
            n += min(have, span)
            if have < span:
                break
        return min(n, cap) * BLOCK

    def run(limit: int | None) -> float:
        cached: OrderedDict[int, int] = OrderedDict()  # chained trace block -> its leading 16-token blocks cached
        blocks = 0
        hits = 0
        for r in sorted(requests, key=lambda q: (q.arrival, q.id)):
            chain = chain_ids(r.prefix_ids)
            hits += hit(r, cached, chain)
            covered = min(len(r.prefix_ids) * MOONCAKE_BLOCK, r.prompt_len) // BLOCK
            for t in range(len(chain) - 1, -1, -1):
                c, span = chain[t], min(per, covered - t * per)
                if span <= 0:
                    continue
                old = cached.pop(c, 0)
                cached[c] = max(old, span)
                blocks += cached[c] - old
            while limit is not None and blocks > limit:
                _, n = cached.popitem(last=False)
                blocks -= n
        return hits / queries

    out = {"unbounded": run(None)}
    for tokens in pooled_tokens:
        out[f"pooled_lru_{tokens}_tokens"] = run(tokens // BLOCK)
    return out


def one(
    trace: str, rate: float, replicas: int, router: str, policy: str, caching: bool, offload: float | None = None
) -> dict:
    requests = load_mooncake(trace, rate)
    spec = RunSpec(
        policy=policy,
        model=MODEL,
        gpu=GPU,
        replicas=str(replicas),
        router=router,
        enable_prefix_caching=caching,
        kv_offloading_size=offload,
    )
    specs = replica_specs(spec)
    engines = [replica_engine(s) for s in specs]
    kv = [e.total_blocks * e.block_size for e in engines]
    cache = [t + e.cfg.kv_offloading_blocks * e.block_size for t, e in zip(kv, engines, strict=True)]
    r = make_router(router, [replica_tile(s).tokens_per_s for s in specs], 0, cache, kv)
    cpu, wall = time.process_time(), time.perf_counter()
    result = Cluster(engines, r).run(requests)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    s = summarize(result, [])
    keys = ("completed", "median_ttft_ms", "p99_ttft_ms", "mean_ttft_ms", "median_tpot_ms", "preemptions")
    keys += ("prefix_cache_hit_rate", "prefix_cache_block_hit_rate", "num_batches")
    if offload is not None:
        keys += ("prefix_cache_hit_rate_by_source", "combined_prefix_cache_hit_rate", "external_prefix_cache_hit_rate")
    row = {
        "replicas": replicas,
        "router": router,
        "policy": policy,
        "prefix_caching": caching,
        **({"kv_offloading_size_gib": offload} if offload is not None else {}),
        "rate": rate,
        **{k: s.get(k) for k in keys},
        "stable": queue_growth(result).stable,
        "requests_per_replica": [len(p.requests) for p in result.replicas],
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)  # each run as it ends: a long run's partial figures
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(SHARED))
    ap.add_argument("--rate", type=float, default=1.0, help="Arrival rate as a multiple of the trace's.")
    ap.add_argument("--replicas", default="4,8")
    ap.add_argument("--policy", default="slai", help="The policy behind every router.")
    ap.add_argument("--routers", default=",".join(ROUTERS), help="Routers run with prefix caching on.")
    ap.add_argument("--off", default="round-robin,cache-aware", help="Routers also run with it off ('' for none).")
    ap.add_argument("--keys", action=argparse.BooleanOptionalAction, default=True, help="The SLAI keys' runs.")
    ap.add_argument("--offload", default="", help="CPU KV tier sizes (GiB per replica) the routers also run with.")
    ap.add_argument("--offload-only", action="store_true", help="Only round-robin and the prefix routers, offloading.")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    counts = [int(n) for n in args.replicas.split(",")]
    sizes = [float(g) for g in args.offload.split(",") if g]
    routers = args.routers.split(",")
    jobs = []
    for n in counts:
        if not args.offload_only:
            jobs += [(args.trace, args.rate, n, rt, args.policy, True) for rt in routers]
            jobs += [(args.trace, args.rate, n, rt, args.policy, False) for rt in args.off.split(",") if rt]
        for g in sizes:
            jobs += [(args.trace, args.rate, n, rt, args.policy, True, g) for rt in routers]
    tiers: list[float | None] = ([] if args.offload_only else [None]) + sizes  # CPU tier per run group
    with Executor("process", args.workers) as ex:
        rows = ex.map(one, jobs)
        best = {}
        for n in counts:
            for g in tiers:
                on = [
                    x
                    for x in rows
                    if x["replicas"] == n
                    and x["prefix_caching"]
                    and x.get("kv_offloading_size_gib") == g
                    and x["router"] in PREFIX_ROUTERS
                ]
                best[n, g] = min(on, key=lambda x: x["median_ttft_ms"])["router"]
        if args.keys and not args.offload_only:
            first = counts[0]
            keyed = [(args.trace, args.rate, first, best[first, None], k, True) for k in KEYS if k != args.policy]
            rows += ex.map(one, keyed)
    requests = load_mooncake(args.trace, args.rate)
    kv_tokens = replica_engine(RunSpec(model=MODEL, gpu=GPU)).total_blocks * BLOCK
    ceiling = ceilings(requests, [n * kv_tokens for n in counts])
    targets = {}
    for n in counts:
        for g in tiers:

            def of(router: str, n: int = n, g: float | None = g) -> dict:
                return next(
                    x
                    for x in rows
                    if x["replicas"] == n
                    and x["router"] == router
                    and x["prefix_caching"]
                    and x["policy"] == args.policy
                    and x.get("kv_offloading_size_gib") == g
                )

            rr, b = of("round-robin"), of(best[n, g])
            hit = b["prefix_cache_hit_rate"] if g is None else b["combined_prefix_cache_hit_rate"]
            row = {
                "best_router": best[n, g],
                "round_robin_stable": rr["stable"],
                "median_ttft_vs_round_robin": b["median_ttft_ms"] / rr["median_ttft_ms"],
                "p99_ttft_vs_round_robin": b["p99_ttft_ms"] / rr["p99_ttft_ms"],
                "hit_rate_points_below_unbounded": 100 * (ceiling["unbounded"] - hit),
            }
            if g is None:
                row["hit_rate_of_pooled_lru"] = hit / ceiling[f"pooled_lru_{n * kv_tokens}_tokens"]
                targets[str(n)] = row
            else:
                targets[f"{n} replicas, {g:g} GiB CPU tier each"] = row
    out = {"trace": args.trace, "kv_tokens_per_replica": kv_tokens, "ceilings": ceiling, "targets": targets}
    out["runs"] = rows
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
