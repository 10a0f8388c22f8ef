"""Routers on a served cluster vs the simulator's prediction for the same cluster.

Two vLLM replicas (CPU, one core each, llmsched scheduler plugin) behind Ray Serve, one given half the
capacity of the other (max_num_seqs 8 vs 4 by default). The same requests (trace lengths, Poisson arrivals,
tiers) are replayed over HTTP --repeats times per router (routers alternating), streaming; per router: the
median over runs of TTFT/ITL percentiles (with the runs' spread), requests per replica, SLO attainment per tier,
and lost requests. Then the simulator runs the same cluster (the batch-time model profiled on this machine
with `llmsched profile --backend vllm`, bound to one core like a replica, the replicas' token budget,
max_num_seqs and KV pool, the same capacities) with the same routers and requests, and we print the relative
error of median TTFT and ITL (target |error| <= 15%, aim 10%).

What serving adds is calibrated on the live app before every served run: a probe of --probe-requests other requests
(the same length distribution, another seed, --probe-router, at --probe-load x the load: host contention grows
with load, so the probe runs at the load it calibrates for) is replayed, the replicas' own step logs (shape and
time of each engine step, `integrations/vllm/steps.py`) fit the served step time as c x the profile + d x
sequences, and the latency outside the engines is the probe's median path (client to replica and back) plus its
median hop from the engine core back to the replica, from the replicas' stamps (`replica_times`). The prediction
forecasts each run from the calibration made just before it (this machine's speed drifts over minutes), and a
router's figure is the median over its runs' forecasts, as the served figure is the median over its runs. Beside it,
the forecast from the median of all calibrations ("pooled", stops 5-7); "speed-adjusted": each run simulated with
each replica's model scaled by how fast that replica really ran in that run (its step log); and how well the
served runs predict each other (each run against the median of the others, `metrics.leave_one_out`): the floor
under any forecast here.

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

import numpy as np

from llmsched.integrations.vllm.steps import step_cycles
from llmsched.metrics import leave_one_out, summarize
from llmsched.perf.base import BatchShape
from llmsched.perf.catalog import register
from llmsched.perf.fitted import load_perf_model
from llmsched.perf.hf_config import spec_from_hf
from llmsched.perf.measured import Scaled, StepFitted, fit_to_steps, speed_factor
from llmsched.policies import make_policy
from llmsched.records import BatchLog, RunResult
from llmsched.routers import make_router
from llmsched.sim.cluster import Cluster
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.workload import WorkloadConfig, build_requests
from llmsched.workload.request import FINISHED, REJECTED, UNFINISHED

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


# Each request's TTFT, split by the replica's `replica_times` (host clock): the path outside the replica (client to
# replica, and back), the replica's part (its arrival to its first token), and within that the hop to the engine
# core, the queueing there, the prefill step(s) and the hop back to the replica.
SPLITS = ("path", "replica", "to_engine", "queue", "prefill", "from_engine")


@dataclass
class Replayed:
    """One replay: the replica rank per request (None: no token came), requests per rank, the last token's
    time, the host-clock time the arrivals count from, and each request's TTFT split (`SPLITS`, seconds)."""

    ranks: list[int | None]
    per_rank: Counter
    end: float
    t0: float
    split: dict[str, list[float]]

    def median_ms(self, part: str) -> float | None:
        values = self.split[part]
        return float(np.median(values)) * 1e3 if values else None

    def medians_ms(self) -> dict[str, float | None]:
        return {part: self.median_ms(part) for part in SPLITS}


def split_ttft(sent: float, received: float, times: dict[str, float]) -> dict[str, float]:
    arrived, first = times["arrived"], times["first_token"]
    parts = {"path": (arrived - sent) + (received - first), "replica": first - arrived}
    if {"queued", "scheduled", "engine_first_token"} <= times.keys():
        parts |= {"to_engine": times["queued"] - arrived, "queue": times["scheduled"] - times["queued"],
                  "prefill": times["engine_first_token"] - times["scheduled"],
                  "from_engine": first - times["engine_first_token"]}  # fmt: skip
    return parts


async def replay(url: str, requests, vocab: int, seed: int) -> Replayed:
    """Send each request at its arrival time (streaming); stamp tokens as their chunks arrive. Requests are
    mutated in place (token_times, state)."""
    import httpx

    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, vocab, size=r.prompt_len).tolist() for r in requests]
    ranks: list[int | None] = [None] * len(requests)
    split: dict[str, list[float]] = {part: [] for part in SPLITS}
    t0 = time.monotonic() + 0.5

    async def one(k: int, client) -> None:
        r = requests[k]
        await asyncio.sleep(max(0.0, t0 + r.arrival - time.monotonic()))
        body = {"prompt": prompts[k], "max_tokens": r.decode_len, "ignore_eos": True, "stream": True, "tier": r.tier}
        r.token_times, r.generated = [], 0
        sent = time.monotonic()
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
                        if "replica_times" in event:
                            for part, value in split_ttft(sent, now + t0, event["replica_times"]).items():
                                split[part].append(value)
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
    return Replayed(ranks, Counter(x for x in ranks if x is not None), end, t0, split)


@dataclass(frozen=True)
class Calibration:
    """What serving adds, measured on the live app: the replicas' step model and the latency outside the engines,
    the medians of the probe's path (client to replica and back) and hop from the engine core back to the replica
    (`replica_times`). The hop in is not added: the engine core takes new requests between steps, so it mostly
    overlaps the step in progress, which the simulator models. Without the engine's stamps, the latency is the
    probe's median TTFT as served less as simulated. `split_ms`: the medians of the probe's TTFT split
    (`SPLITS`); `sim_ttft_ms`: its median TTFT simulated with the model (the engines' part); `unexplained`: the
    probe's median TTFT as served less as predicted (the simulated engines plus `latency`)."""

    model: StepFitted
    latency: float
    split_ms: dict[str, float | None]
    sim_ttft_ms: float
    unexplained: float
    steps: int
    window: tuple[float, float] = (0.0, 0.0)  # host-clock span of the probe (its steps are in the step logs)


@dataclass(frozen=True)
class Prediction:
    """What the simulator is given: the step model and the latency outside the engines, the medians of one or
    more calibrations (this machine's speed drifts between them).

    The step model (`perf.base.StepFitted`) is one factor on the profile for every step (two engines and Serve's
    processes share the 2 cores; the profile ran alone) plus a cost per sequence (each running request's token
    also goes through AsyncLLM's output processing and Serve's streaming). A factor per step kind
    (prefill-carrying, decode-only), tried at stop 6 on the probes of sets i, j and k, lowered the predicted
    median TTFT by 3-14 points of error: better where the simulator was high, worse where it was low."""

    model: StepFitted
    latency: float

    @staticmethod
    def of(cals: list[Calibration]) -> Prediction:
        def med(values: list[float]) -> float:
            return float(np.median(values))

        model = StepFitted(cals[0].model.inner, med([c.model.compute for c in cals]),
                           med([c.model.per_seq for c in cals]))  # fmt: skip
        return Prediction(model, med([c.latency for c in cals]))


def calibrate(
    url: str, perf, probe_reqs, predict, router: str, steps_dir: Path, replicas: int, vocab: int
) -> Calibration:
    """Replay `probe_reqs` (not the evaluated requests; the app routing with `router`), fit the step model to the
    replicas' steps in that window, and measure the latency outside the engines."""
    reqs = copy.deepcopy(probe_reqs)
    got = asyncio.run(replay(url, reqs, vocab, seed=1))
    window = (got.t0, got.t0 + got.end)
    steps = [x for k in range(replicas) for x in step_cycles(str(steps_dir / f"rank{k}.csv"), *window)]
    model = fit_to_steps(perf, steps)
    served = summarize(RunResult(reqs, BatchLog(), 0, got.end), [])["median_ttft_ms"] / 1e3
    sim = summarize(predict(probe_reqs, router, [model] * replicas, 0.0), [])["median_ttft_ms"] / 1e3
    split = got.medians_ms()
    path, back = split["path"], split["from_engine"]
    latency = (path + back) / 1e3 if path is not None and back is not None else max(0.0, served - sim)
    return Calibration(model, latency, split, sim * 1e3, served - sim - latency, len(steps), window)


def describe(m: StepFitted) -> str:
    return f"{m.compute:.2f} x profile + {m.per_seq * 1e3:.2f} ms per sequence"


def simulate(requests, router, capacities, replicas: list[dict], perfs, policy, max_len: int, seed: int, latency):
    """`perfs`: one batch-time model per replica."""
    engines = [
        SimEngine(
            EngineConfig(o["kv_blocks"], o["token_budget"], o["max_num_seqs"], block_size=128, max_model_len=max_len),
            make_policy("vllm-v1" if policy == "vllm-default" else policy),
            perf,
        )
        for o, perf in zip(replicas, perfs, strict=True)
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
    # 80, not 40: a probe's start and drain (few requests, one replica idle) run the engines less contended than
    # a run's steady state: with 40-request probes (set h) the runs' steps took a median 9% longer than calibrated.
    ap.add_argument("--probe-requests", type=int, default=80, help="requests of each calibration probe")
    ap.add_argument("--probe-load", type=float, default=1.0, help="calibration probes run at this x the load")
    ap.add_argument("--probe-router", default="resource-aware", help="router of the calibration probes")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    args = ap.parse_args()
    if args.policy == "vllm-default":  # its replicas run vLLM's own scheduler, which logs no steps
        ap.error("--policy vllm-default: the calibration reads the llmsched plugin's step logs; use slai or sarathi")

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
    steps_dir = work / "steps"  # each replica's engine steps (shape, times), to measure its speed in each run
    cfg = ServeConfig(model, opts, router=routers[0], policy=args.policy, tiers=args.tiers, steps_dir=str(steps_dir))
    served = server.start(cfg, port=args.port, num_cpus=max(2, len(opts)))
    print(f"start-up of the {len(opts)}-replica app: {served.startup_s:.1f} s", file=sys.stderr)
    report: dict = {"startup_s": served.startup_s, "capacities": caps, "routers": {}, "steps_dir": str(steps_dir)}
    try:
        import httpx

        warm = {"prompt": [5] * 8, "max_tokens": 2}
        httpx.post(served.url + "/v1/completions", json=warm, timeout=60).raise_for_status()  # makes the router
        snap = httpx.get(served.url + "/llmsched/routing", timeout=10).json()[0]
        replicas = sorted((r["reported"] for r in snap["replicas"].values()), key=lambda s: s["rank"])
        report["replicas"] = replicas

        def use_router(name: str) -> None:
            httpx.post(served.url + "/llmsched/router", json={"router": name}, timeout=10).raise_for_status()

        def predict(requests, name, perfs=None, latency=None):
            perfs = perfs or [pred.model] * len(replicas)
            lat = pred.latency if latency is None else latency
            return simulate(requests, name, caps, replicas, perfs, args.policy, spec.max_len, args.seed, lat)

        def calibrated(qps: float) -> Calibration:
            use_router(args.probe_router)
            wl = WorkloadConfig(trace=trace, num_requests=args.probe_requests, qps=qps, tiers=args.tiers,
                                seed=args.seed + 1)  # fmt: skip
            got = calibrate(served.url, perf, build_requests(wl, spec.max_len)[0], predict, args.probe_router,
                            steps_dir, len(opts), spec.vocab)  # fmt: skip
            nan = float("nan")
            print(f"calibration at {qps:.2f} req/s: {describe(got.model)} ({got.steps} steps); latency "
                  f"{got.latency * 1e3:.0f} ms, unexplained "
                  f"{got.unexplained * 1e3:+.0f} ms (probe: path "
                  f"{got.split_ms['path'] or nan:.0f} ms, replica to first token {got.split_ms['replica'] or nan:.0f}"
                  f" ms, of which queued {got.split_ms['queue'] or nan:.0f} ms and prefill "
                  f"{got.split_ms['prefill'] or nan:.0f} ms; simulated {got.sim_ttft_ms:.0f} ms)",
                  file=sys.stderr)  # fmt: skip
            return got

        mean_decode = float(np.mean([r.decode_len for r in workload(1.0)[0]]))
        pred = Prediction.of([calibrated(0.1 * sum(caps) / mean_decode)])  # gently: the profile ran alone
        qps = args.qps or pick_qps(workload, predict, pred.model, seqs, args.ttft_slo)
        requests, tiers = workload(qps)
        report["qps"] = qps
        print(f"qps {qps:.2f}, {len(requests)} requests", file=sys.stderr)
        runs: dict[str, list[dict]] = {name: [] for name in routers}
        cals = []
        for rep in range(args.repeats):  # routers alternate, so slow phases of the machine hit each alike
            for name in routers:
                cals.append(calibrated(args.probe_load * qps))  # beside every run: the machine's speed drifts
                use_router(name)
                real_reqs = copy.deepcopy(requests)
                got = asyncio.run(replay(served.url, real_reqs, spec.vocab, args.seed))
                real = summarize(RunResult(real_reqs, BatchLog(), 0, got.end), tiers, args.ttft_slo)
                lost = len(real_reqs) - real["completed"]
                counts = [got.per_rank.get(i, 0) for i in range(len(opts))]
                runs[name].append({
                    "summary": real, "lost": lost, "per_replica": counts, "window": [got.t0, got.t0 + got.end],
                    "median_ttft_split_ms": got.medians_ms(), "calibration": cals[-1],
                })  # fmt: skip
                print(f"run {rep + 1} {name}: requests per replica {counts}, completed {real['completed']}/"
                      f"{len(real_reqs)}, lost {lost}, median TTFT {real['median_ttft_ms']:.0f} ms, p99 TTFT "
                      f"{real['p99_ttft_ms']:.0f} ms", file=sys.stderr)  # fmt: skip
        pred = Prediction.of(cals)  # the median of the calibrations beside the runs (`predict` reads `pred`)
        each = [{"compute": c.model.compute, "per_seq_s": c.model.per_seq, "latency_s": c.latency,
                 "median_ttft_split_ms": c.split_ms, "sim_engine_ttft_ms": c.sim_ttft_ms,
                 "unexplained_s": c.unexplained, "steps": c.steps, "window": c.window}
                for c in cals]  # fmt: skip
        report["calibration"] = {
            "compute": pred.model.compute, "per_seq_s": pred.model.per_seq, "latency_s": pred.latency,
            "probe_load": args.probe_load, "probe_requests": args.probe_requests, "each": each,
        }  # fmt: skip
        print(f"median of {len(cals)} calibrations: {describe(pred.model)}; latency {pred.latency * 1e3:.0f} ms",
              file=sys.stderr)  # fmt: skip

        def speed_adjusted(x: dict, name: str) -> dict[str, float]:
            """Errors of the simulator against one served run given how fast the machine ran in that run: each
            replica's model scaled by its speed factor (its step cycles in the run / the model's prediction for
            their shapes). Separates this CPU's drift between runs from the simulator's own error."""
            factors = [speed_factor(step_cycles(str(steps_dir / f"rank{k}.csv"), *x["window"]), pred.model)
                       for k in range(len(replicas))]  # fmt: skip
            x["speed_factors"] = factors
            s = summarize(predict(requests, name, [Scaled(pred.model, f) for f in factors]), tiers, args.ttft_slo)
            return {k: (s[k] - x["summary"][k]) / x["summary"][k] for k in KEYS}

        def forecast(name: str, cal: Calibration) -> dict:
            return summarize(predict(requests, name, [cal.model] * len(replicas), cal.latency), tiers, args.ttft_slo)

        def rel(sim: dict, real: dict) -> dict[str, float | None]:
            return {k: (sim[k] - real[k]) / real[k] if real[k] and sim[k] is not None else None for k in KEYS}

        def pct(x: float | None) -> str:
            return f"{x:+.1%}" if x is not None else "-"

        for name in routers:
            sim_result = predict(requests, name)
            sim = summarize(sim_result, tiers, args.ttft_slo)
            sim_counts = [s["requests"] for s in sim_result.replica_summary()]
            served_runs = [x["summary"] for x in runs[name]]
            real = {k: float(np.median([x[k] for x in served_runs])) for k in KEYS}
            spread = {k: max(abs(x[k] - real[k]) for x in served_runs) / real[k] for k in KEYS}
            # The forecast: each run from the probe just before it (the machine drifts over minutes), the median
            # over runs as for the served figure. Medians within 15%: sets i-k (offline) 10 of 12, pooled 8 of 12;
            # set l 4 of 4; set m 0 of 4 (its runs ran faster than its probes).
            per_run = [forecast(name, x.pop("calibration")) for x in runs[name]]
            forecasts = {k: float(np.median([f[k] for f in per_run])) for k in KEYS}
            report["routers"][name] = {"served_runs": runs[name], "served_median": real, "served_spread": spread,
                                       "served_loo": leave_one_out(served_runs, KEYS), "sim": sim,
                                       "sim_per_run": forecasts, "error": rel(forecasts, real),
                                       "pooled_error": rel(sim, real), "sim_per_replica": sim_counts,
                                       "lost": sum(x["lost"] for x in runs[name])}  # fmt: skip
            err = report["routers"][name]["error"]
            print(f"\n{name}: requests per replica {[x['per_replica'] for x in runs[name]]} (sim {sim_counts}), "
                  f"lost {report['routers'][name]['lost']} in {args.repeats} runs")  # fmt: skip
            loo, pooled = report["routers"][name]["served_loo"], report["routers"][name]["pooled_error"]
            for k in KEYS:
                print(f"  {k:<16} served {real[k]:9.1f} (runs +-{spread[k]:.0%}; one run against the others "
                      f"{pct(loo[k])})  forecast {forecasts[k]:9.1f}  error {pct(err[k])} (pooled calibration: "
                      f"{pct(pooled[k])})")  # fmt: skip
            for tname, st in sim.get("tiers", {}).items():
                att = [x.get("tiers", {}).get(tname, {}).get("slo_attainment") for x in served_runs]
                print(f"  tier {tname}: SLO attainment served {att}, sim {st.get('slo_attainment')}")
            per_run = [speed_adjusted(x, name) for x in runs[name]]
            adj = {k: float(np.median([e[k] for e in per_run])) for k in KEYS}
            report["routers"][name]["speed_adjusted_error"] = adj
            print(f"  speed-adjusted (each run's replicas at their speed in that run): speed factors "
                  f"{[[round(f, 2) for f in x['speed_factors']] for x in runs[name]]}; errors (median over runs) "
                  + ", ".join(f"{k} {adj[k]:+.1%}" for k in KEYS))  # fmt: skip
            engines_ms = sim["median_ttft_ms"] - pred.latency * 1e3
            report["routers"][name]["sim_engine_ttft_ms"] = engines_ms
            print("  served TTFT split, medians per run (ms): " + "; ".join(
                ", ".join(f"{part} {x['median_ttft_split_ms'][part] or float('nan'):.0f}" for part in SPLITS)
                for x in runs[name]) + f"; simulated engines' part {engines_ms:.0f} ms")  # fmt: skip
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
        for label, key in (("pooled calibration", "pooled_error"), ("speed-adjusted", "speed_adjusted_error"),
                           ("one served run against the others", "served_loo")):  # fmt: skip
            worst = [abs(e) for x in r.values() for k, e in x[key].items() if e is not None and k.startswith("median")]
            print(f"  {label}: {max(worst):.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
