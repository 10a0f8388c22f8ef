"""Routers on a served cluster vs the simulator's prediction for the same cluster.

Two vLLM replicas (CPU, one core each, llmsched scheduler plugin) behind Ray Serve, one given half the
capacity of the other (max_num_seqs 8 vs 4 by default). The same requests (trace lengths, Poisson arrivals,
tiers) are replayed over HTTP --repeats times per router (routers alternating), streaming; per router: the
median over runs of TTFT/ITL percentiles (with the runs' spread), requests per replica, SLO attainment per tier,
and lost requests. Then the simulator runs the same cluster (the batch-time model profiled on this machine
with `llmsched profile --backend vllm`, bound to one core like a replica, the replicas' token budget,
max_num_seqs and KV pool, the same capacities) with the same routers and requests, and we print the relative
error of median TTFT and ITL (target |error| <= 15%, aim 10%).

Both routers (served and simulated) get the same capacities: b/t(b) decode tokens/s at the replica's
max_num_seqs b, from the profiled model. The router is switched between runs on the live app
(POST /llmsched/router), so the app starts once.

    python benchmarks/serve_routing.py                        # tiny random Llama, built in a temp folder
    python benchmarks/serve_routing.py --model models/smollm2 --qps 4 --num-requests 200
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmsched.metrics import summarize
from llmsched.perf.base import BatchShape
from llmsched.perf.fitted import load_perf_model
from llmsched.perf.hf_config import register, spec_from_hf
from llmsched.policies import make_policy
from llmsched.routing import make_router
from llmsched.sim.cluster import Cluster
from llmsched.sim.engine import BatchLog, EngineConfig, RunResult, SimEngine
from llmsched.workload import WorkloadConfig, build_requests
from llmsched.workload.request import FINISHED, REJECTED, UNFINISHED, Request

KEYS = ("median_ttft_ms", "p99_ttft_ms", "median_itl_ms", "p99_itl_ms")


def short_trace(path: Path, n: int, seed: int) -> str:
    """Prompt 32-256 and decode 16-96 tokens: requests a CPU replica serves in about a second."""
    rng = np.random.default_rng(seed)
    rows = zip(rng.integers(32, 257, n), rng.integers(16, 97, n), strict=True)
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "".join(f"{p},{d}\n" for p, d in rows))
    return str(path)


def profile(model: str, out: Path, budget_s: float) -> str:
    """The batch-time profile of one replica: a subprocess bound to one core, as each replica is."""
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": "0"}
    code = f"from llmsched.integrations.vllm.profiler import run_profile as p; p({model!r}, {str(out)!r}, {budget_s})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return str(out)


def decode_capacity(perf, b: int, context: int) -> float:
    return b / perf.batch_time(BatchShape.of([], [context] * b))


async def replay(url: str, requests, vocab: int, seed: int) -> tuple[list, Counter, float]:
    """Send each request at its arrival time (streaming); stamp tokens as their chunks arrive. Requests are
    mutated in place (token_times, state); returns the replica rank per request."""
    import httpx

    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, vocab, size=r.prompt_len).tolist() for r in requests]
    ranks: list[int | None] = [None] * len(requests)
    t0 = time.monotonic() + 0.5

    async def one(k: int, client) -> None:
        r = requests[k]
        await asyncio.sleep(max(0.0, t0 + r.arrival - time.monotonic()))
        body = {"prompt": prompts[k], "max_tokens": r.decode_len, "ignore_eos": True, "stream": True, "tier": r.tier}
        r.token_times, r.generated = [], 0
        try:
            async with client.stream("POST", url + "/v1/completions", json=body) as resp:
                async for line in resp.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    now = time.monotonic() - t0
                    event = json.loads(line[6:])
                    if "error" in event:
                        r.state, r.reason = REJECTED, event["error"]["message"]
                        return
                    n = event.get("num_tokens", 0)
                    if n:
                        ranks[k] = event.get("replica_rank")
                        r.token_times.extend([now] * n)
                        r.generated += n
            r.state = FINISHED if r.generated >= r.decode_len else REJECTED
            r.reason = "" if r.state == FINISHED else f"stream ended after {r.generated} tokens"
        except httpx.HTTPError as e:
            r.state, r.reason = UNFINISHED, f"client: {type(e).__name__}"

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        await asyncio.gather(*(one(k, client) for k in range(len(requests))))
    end = max((t for r in requests for t in r.token_times[-1:]), default=0.0)
    return ranks, Counter(x for x in ranks if x is not None), end


@dataclass(frozen=True)
class ServedPerf:
    """The profiled batch time plus what serving adds to each step on this machine: a fixed cost and a cost per
    sequence (each running request's token goes through AsyncLLM's output processing and Serve's streaming,
    on the same 2 cores). Both are measured on the served app at low load, before each run; the prediction takes
    the median over the runs, since this machine's speed drifts between them."""

    inner: Any
    per_batch: float
    per_seq: float
    name: str = "profiled + serving overhead"

    def batch_time(self, shape: BatchShape) -> float:
        seqs = shape.decodes + shape.num_prefills
        return self.inner.batch_time(shape) + self.per_batch + self.per_seq * seqs


def probe(url: str, per_replica: int, replicas: int, vocab: int, rounds: int = 4) -> tuple[float, float]:
    """Median TTFT and ITL (s) of `per_replica` concurrent decode-heavy requests on each replica (round-robin),
    in rounds 2 s apart; the first round (new connections) is left out."""
    n = per_replica * replicas
    reqs = [Request(i, 2.0 * (i // n), 32, 64) for i in range(n * rounds)]
    asyncio.run(replay(url, reqs, vocab, seed=1))
    s = summarize(RunResult(reqs[n:], BatchLog(), 0, 0.0), [])
    return s["median_ttft_ms"] / 1e3, s["median_itl_ms"] / 1e3


def calibrate(url: str, perf, replicas: int, vocab: int, m: int = 4) -> tuple[ServedPerf, float]:
    """Serving overhead per step (a + b x sequences) from the ITL with 1 and `m` requests per replica, and the
    fixed latency of the path (HTTP, ingress, routing) from the TTFT with 1."""
    ttft1, itl1 = probe(url, 1, replicas, vocab)
    _, itl_m = probe(url, m, replicas, vocab)
    model = [perf.batch_time(BatchShape.of([], [64] * k)) for k in (1, m)]
    b = max(0.0, ((itl_m - model[1]) - (itl1 - model[0])) / (m - 1))
    a = max(0.0, itl1 - model[0] - b)
    served = ServedPerf(perf, a, b)
    latency = max(0.0, ttft1 - served.batch_time(BatchShape.of([(32, 0)], [])))
    return served, latency


def simulate(requests, router, capacities, replicas: list[dict], perf, policy, max_len: int, seed: int, latency: float):
    engines = [
        SimEngine(
            EngineConfig(o["kv_blocks"], o["token_budget"], o["max_num_seqs"], block_size=128, max_model_len=max_len),
            make_policy("vllm-v1" if policy == "vllm-default" else policy),
            perf,
        )
        for o in replicas
    ]
    result = Cluster(engines, make_router(router, capacities, seed)).run(copy.deepcopy(requests))
    for r in result.requests:  # the path outside the engines (HTTP, ingress, routing, streaming back)
        r.token_times = [t + latency for t in r.token_times]
    return result


def pick_qps(workload, predict, perf, seqs: list[int], ttft_slo: float) -> float:
    """The highest load (a fraction of the replicas' total capacity, by the calibrated simulator) at which
    resource-aware keeps p99 TTFT within the SLO; round-robin, sending half the requests to the slow replica,
    cannot hold it there."""
    caps = [b / perf.batch_time(BatchShape.of([], [256] * b)) for b in seqs]
    rows, _ = workload(1.0)
    per_request = float(np.mean([r.decode_len for r in rows]))
    best = 0.5 * sum(caps) / per_request
    for f in np.arange(0.5, 1.31, 0.1):
        qps = f * sum(caps) / per_request
        p99 = summarize(predict(workload(qps)[0], "resource-aware"), [])["p99_ttft_ms"]
        if p99 is None or p99 > ttft_slo * 1e3:
            break
        best = qps
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the tiny random Llama, built here)")
    ap.add_argument("--profile", default=None, help="profile CSV of this model (default: measured now)")
    ap.add_argument("--profile-budget-s", type=float, default=120.0)
    ap.add_argument("--routers", default="round-robin,resource-aware")
    ap.add_argument("--policy", default="slai")
    ap.add_argument("--max-num-seqs", default="8,4", help="per replica: the second has half the capacity")
    ap.add_argument("--qps", type=float, default=None, help="default: the highest load resource-aware holds (sim)")
    ap.add_argument("--num-requests", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3, help="served runs per router (alternating); medians reported")
    ap.add_argument("--trace", default=None, help="trace CSV (default: short synthetic requests)")
    ap.add_argument("--tiers", default="paying:0.5:tbt=0.2,free:0.5:tbt=1.0")
    ap.add_argument("--ttft-slo", type=float, default=1.0, help="TTFT SLO (s) for the attainment per tier")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    args = ap.parse_args()

    from llmsched.integrations.ray_serve import server
    from llmsched.integrations.ray_serve.app import ServeConfig
    from llmsched.integrations.ray_serve.replica import ReplicaOptions
    from llmsched.integrations.vllm.models import build_tiny_llama

    work = Path(tempfile.mkdtemp(prefix="serve_routing."))
    model = args.model or str(build_tiny_llama(work / "tiny", max_len=4096))  # the profiler needs > 2048
    spec = register(spec_from_hf(model))
    t = time.monotonic()
    prof = args.profile or profile(model, work / "profile.csv", args.profile_budget_s)
    print(f"profile: {prof} ({time.monotonic() - t:.0f} s)", file=sys.stderr)
    perf = load_perf_model(prof, spec.name)
    trace = args.trace or short_trace(work / "trace.csv", 1000, args.seed)
    seqs = [int(x) for x in args.max_num_seqs.split(",")]
    caps = [decode_capacity(perf, b, 256) for b in seqs]
    print(f"router capacities {[round(c) for c in caps]} tokens/s (profiled, decodes at max_num_seqs)", file=sys.stderr)

    def workload(qps: float):
        wl = WorkloadConfig(trace=trace, num_requests=args.num_requests, qps=qps, tiers=args.tiers, seed=args.seed)
        return build_requests(wl, spec.max_len)

    opts = tuple(ReplicaOptions(max_num_seqs=b, capacity=c) for b, c in zip(seqs, caps, strict=True))
    routers = args.routers.split(",")
    cfg = ServeConfig(model, opts, router=routers[0], policy=args.policy, tiers=args.tiers)
    served = server.start(cfg, port=args.port, num_cpus=max(2, len(opts)))
    print(f"start-up of the {len(opts)}-replica app: {served.startup_s:.1f} s", file=sys.stderr)
    report: dict = {"startup_s": served.startup_s, "capacities": caps, "routers": {}}
    try:
        import httpx

        warm = {"prompt": [5] * 8, "max_tokens": 2}
        httpx.post(served.url + "/v1/completions", json=warm, timeout=60).raise_for_status()  # makes the router
        snap = httpx.get(served.url + "/llmsched/routing", timeout=10).json()[0]
        replicas = sorted((r["reported"] for r in snap["replicas"].values()), key=lambda s: s["rank"])

        def use_router(name: str) -> None:
            httpx.post(served.url + "/llmsched/router", json={"router": name}, timeout=10).raise_for_status()

        def calibrated() -> tuple[ServedPerf, float]:
            use_router("round-robin")  # the probes put the same load on each replica
            return calibrate(served.url, perf, len(opts), spec.vocab)

        sim_perf, latency = calibrated()
        print(f"serving overhead: {sim_perf.per_batch * 1e3:.2f} ms per step + {sim_perf.per_seq * 1e3:.2f} ms per "
              f"sequence; path latency {latency * 1e3:.1f} ms", file=sys.stderr)  # fmt: skip

        def predict(requests, name):
            return simulate(requests, name, caps, replicas, sim_perf, args.policy, spec.max_len, args.seed, latency)

        qps = args.qps or pick_qps(workload, predict, sim_perf, seqs, args.ttft_slo)
        requests, tiers = workload(qps)
        report["qps"] = qps
        print(f"qps {qps:.2f}, {len(requests)} requests", file=sys.stderr)
        runs: dict[str, list[dict]] = {name: [] for name in routers}
        cals = [(sim_perf, latency)]
        for rep in range(args.repeats):  # routers alternate, so slow phases of the machine hit each alike
            for name in routers:
                if rep or name != routers[0]:  # calibrated again beside every run: the machine's speed drifts
                    cals.append(calibrated())
                use_router(name)
                real_reqs = copy.deepcopy(requests)
                ranks, per_replica, end = asyncio.run(replay(served.url, real_reqs, spec.vocab, args.seed))
                real = summarize(RunResult(real_reqs, BatchLog(), 0, end), tiers, args.ttft_slo)
                lost = len(real_reqs) - real["completed"]
                counts = [per_replica.get(i, 0) for i in range(len(opts))]
                runs[name].append({"summary": real, "lost": lost, "per_replica": counts})
                print(f"run {rep + 1} {name}: requests per replica {counts}, completed {real['completed']}/"
                      f"{len(real_reqs)}, lost {lost}, median TTFT {real['median_ttft_ms']:.0f} ms, p99 TTFT "
                      f"{real['p99_ttft_ms']:.0f} ms", file=sys.stderr)  # fmt: skip
        # The prediction takes the median of the calibrations beside the runs (`predict` reads these names).
        sim_perf = ServedPerf(
            perf, *(float(np.median([getattr(c, k) for c, _ in cals])) for k in ("per_batch", "per_seq"))
        )
        latency = float(np.median([lat for _, lat in cals]))
        report["calibration"] = {"per_batch_s": sim_perf.per_batch, "per_seq_s": sim_perf.per_seq, "latency_s": latency,
                                 "each": [[c.per_batch, c.per_seq, lat] for c, lat in cals]}  # fmt: skip
        print(
            f"median of {len(cals)} calibrations: {sim_perf.per_batch * 1e3:.2f} ms per step + "
            f"{sim_perf.per_seq * 1e3:.2f} ms per sequence; path latency {latency * 1e3:.1f} ms",
            file=sys.stderr,
        )
        for name in routers:
            sim_result = predict(requests, name)
            sim = summarize(sim_result, tiers, args.ttft_slo)
            sim_counts = [s["requests"] for s in sim_result.replica_summary()]
            served_runs = [x["summary"] for x in runs[name]]
            real = {k: float(np.median([x[k] for x in served_runs])) for k in KEYS}
            spread = {k: max(abs(x[k] - real[k]) for x in served_runs) / real[k] for k in KEYS}
            err = {k: (sim[k] - real[k]) / real[k] if real[k] and sim[k] is not None else None for k in KEYS}
            report["routers"][name] = {"served_runs": runs[name], "served_median": real, "served_spread": spread,
                                       "sim": sim, "error": err, "sim_per_replica": sim_counts,
                                       "lost": sum(x["lost"] for x in runs[name])}  # fmt: skip
            print(f"\n{name}: requests per replica {[x['per_replica'] for x in runs[name]]} (sim {sim_counts}), "
                  f"lost {report['routers'][name]['lost']} in {args.repeats} runs")  # fmt: skip
            for k in KEYS:
                e = f"{err[k]:+.1%}" if err[k] is not None else "-"
                print(f"  {k:<16} served {real[k]:9.1f} (runs +-{spread[k]:.0%})  sim {sim[k] or float('nan'):9.1f}"
                      f"  error {e}")  # fmt: skip
            for tname, st in sim.get("tiers", {}).items():
                att = [x.get("tiers", {}).get(tname, {}).get("slo_attainment") for x in served_runs]
                print(f"  tier {tname}: SLO attainment served {att}, sim {st.get('slo_attainment')}")
    finally:
        server.stop(served)
    r = report["routers"]
    if "round-robin" in r and "resource-aware" in r:
        pairs = zip(r["resource-aware"]["served_runs"], r["round-robin"]["served_runs"], strict=True)
        ratios = [a["summary"]["p99_ttft_ms"] / b["summary"]["p99_ttft_ms"] for a, b in pairs]
        report["p99_ttft_ratio_per_run"] = ratios
        print(f"\np99 TTFT resource-aware / round-robin per run: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"median {float(np.median(ratios)):.2f} (target <= 0.7)")  # fmt: skip
    errs = [abs(e) for x in r.values() for k, e in x["error"].items() if e is not None and k.startswith("median")]
    if errs:
        print(f"worst |error| of median TTFT/ITL over routers: {max(errs):.1%} (target <= 15%, aim 10%)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
