"""Routers on a served cluster, and the simulator's forecast of the same cluster.

Two vLLM replicas (CPU, one core each, llmsched scheduler plugin) behind Ray Serve, one given half the capacity of
the other (max_num_seqs 8 vs 4 by default). The same requests (trace lengths, Poisson arrivals, tiers) are replayed
over HTTP (`integrations.ray_serve.client`) --repeats times per router (routers alternating, switched on the live
app with POST /llmsched/router, so the app starts once); per router: the median over runs of TTFT/ITL percentiles
(with the runs' spread), requests per replica, SLO attainment per tier and lost requests; and the p99 TTFT of
resource-aware over round-robin per run.

The forecast (`studies.served`): before every served run a probe of --probe-requests other requests (same length
distribution, another seed, --probe-router, at --probe-load x the load) is replayed and fitted (the replicas' step
logs fit c x the profile + d per sequence; the latency outside the engines comes from the replicas' stamps); each run
is forecast from the probe just before it, and a router's figure is the median over its runs' forecasts. Beside it:
the forecast from the median of all probes (`pooled_error`); each run simulated with each replica's model scaled by
how fast it really ran in that run (`speed_adjusted_error`); and how well the served runs predict each other
(`served_loo`: each run against the median of the others), the floor under any forecast here.

    python benchmarks/serve_routing.py                        # tiny random Llama, built in a temp folder
    python benchmarks/serve_routing.py --model DIR --profile benchmarks/results/smollm2_vllm_cpu_profile.csv \
        --repeats 5 --num-requests 150
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
from pathlib import Path

import numpy as np

from llmsched.integrations.ray_serve.client import SPLITS, Replayed, replay, replica_reports, use_router
from llmsched.integrations.vllm.steps import step_cycles
from llmsched.metrics import leave_one_out, summarize
from llmsched.perf.catalog import register
from llmsched.perf.fitted import load_perf_model
from llmsched.perf.hf_config import spec_from_hf
from llmsched.perf.measured import Scaled, speed_factor
from llmsched.records import BatchLog, RunResult
from llmsched.studies.served import Forecast, ProbeFit, ServedCluster, decode_capacity, fit_probe
from llmsched.workload import WorkloadConfig, build_requests

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


class Bench:
    """The live app, the workload and the simulated cluster that stands for the app."""

    def __init__(self, args: argparse.Namespace, url: str, cluster: ServedCluster, perf, trace: str, spec) -> None:
        self.args, self.url, self.cluster, self.perf, self.trace, self.spec = args, url, cluster, perf, trace, spec
        self.steps_dir = Path(args.work) / "steps"

    def workload(self, qps: float, n: int | None = None, seed_offset: int = 0):
        a = self.args
        wl = WorkloadConfig(
            trace=self.trace,
            num_requests=n or a.num_requests,
            qps=qps,
            arrival="poisson",
            tiers=a.tiers,
            seed=a.seed + seed_offset,
        )
        return build_requests(wl, self.spec.max_len)

    def use_router(self, name: str) -> None:
        use_router(self.url, name)

    def replay(self, requests, seed: int) -> Replayed:
        return asyncio.run(replay(self.url, requests, self.spec.vocab, seed))

    def steps_in(self, window: tuple[float, float], rank: int | None = None):
        ranks = range(len(self.cluster.replicas)) if rank is None else [rank]
        return [x for k in ranks for x in step_cycles(str(self.steps_dir / f"rank{k}.csv"), *window)]

    def probe(self, qps: float) -> ProbeFit:
        """Replay other requests at `qps` and fit what serving adds on the replicas' steps in that window."""
        a = self.args
        self.use_router(a.probe_router)
        requests = self.workload(qps, a.probe_requests, seed_offset=1)[0]
        served = copy.deepcopy(requests)
        got = self.replay(served, seed=1)
        window = (got.t0, got.t0 + got.end)
        fit = fit_probe(
            self.cluster,
            self.perf,
            requests,
            served,
            got.end,
            got.medians_ms(),
            self.steps_in(window),
            a.probe_router,
            window,
        )
        s = {k: v if v is not None else float("nan") for k, v in fit.split_ms.items()}
        print(
            f"probe at {qps:.2f} req/s: {fit.describe()} ({fit.steps} steps); latency {fit.latency * 1e3:.0f} ms, "
            f"unexplained {fit.unexplained * 1e3:+.0f} ms (path {s['path']:.0f} ms, replica to first token "
            f"{s['replica']:.0f} ms, of which queued {s['queue']:.0f} ms and prefill {s['prefill']:.0f} ms; "
            f"simulated {fit.sim_ttft_ms:.0f} ms)",
            file=sys.stderr,
        )
        return fit

    def forecast(self, requests, router: str, model, latency: float, tiers) -> dict:
        result = self.cluster.simulate(requests, router, [model] * len(self.cluster.replicas), latency)
        return summarize(result, tiers, self.args.ttft_slo)

    def pick_qps(self, fc: Forecast) -> float:
        """The highest load (a fraction of the replicas' total capacity, by the fitted simulator) at which
        resource-aware keeps p99 TTFT within the SLO; round-robin, sending half the requests to the slow replica,
        cannot hold it there."""
        per_request = float(np.mean([r.decode_len for r in self.workload(1.0)[0]]))
        total = sum(self.cluster.capacities)
        best = 0.5 * total / per_request
        for f in np.arange(0.5, 1.31, 0.1):
            qps = f * total / per_request
            p99 = self.forecast(self.workload(qps)[0], "resource-aware", fc.model, fc.latency, [])["p99_ttft_ms"]
            if p99 is None or p99 > self.args.ttft_slo * 1e3:
                break
            best = qps
        return best


def rel(sim: dict, real: dict) -> dict[str, float | None]:
    return {k: (sim[k] - real[k]) / real[k] if real[k] and sim[k] is not None else None for k in KEYS}


def pct(x: float | None) -> str:
    return f"{x:+.1%}" if x is not None else "-"


def served_runs(bench: Bench, routers: list[str], qps: float) -> tuple[dict[str, list[dict]], list[ProbeFit]]:
    """--repeats served runs per router, routers alternating (slow phases of the machine hit each alike), each after
    a probe (the machine's speed drifts over minutes)."""
    a = bench.args
    requests, tiers = bench.workload(qps)
    runs: dict[str, list[dict]] = {name: [] for name in routers}
    fits = []
    for rep in range(a.repeats):
        for name in routers:
            fits.append(bench.probe(a.probe_load * qps))
            bench.use_router(name)
            real_reqs = copy.deepcopy(requests)
            got = bench.replay(real_reqs, a.seed)
            real = summarize(RunResult(real_reqs, BatchLog(), 0, got.end), tiers, a.ttft_slo)
            lost = len(real_reqs) - real["completed"]
            counts = [got.per_rank.get(i, 0) for i in range(len(bench.cluster.replicas))]
            runs[name].append(
                {
                    "summary": real,
                    "lost": lost,
                    "per_replica": counts,
                    "window": [got.t0, got.t0 + got.end],
                    "median_ttft_split_ms": got.medians_ms(),
                    "fit": fits[-1],
                }
            )
            print(
                f"run {rep + 1} {name}: requests per replica {counts}, completed {real['completed']}/"
                f"{len(real_reqs)}, lost {lost}, median TTFT {real['median_ttft_ms']:.0f} ms, p99 TTFT "
                f"{real['p99_ttft_ms']:.0f} ms",
                file=sys.stderr,
            )
    return runs, fits


def compare_router(bench: Bench, name: str, runs: list[dict], pooled: Forecast, qps: float) -> dict:
    """Served medians against the forecasts for one router; prints the comparison."""
    a = bench.args
    requests, tiers = bench.workload(qps)
    sim_result = bench.cluster.simulate(requests, name, [pooled.model] * len(bench.cluster.replicas), pooled.latency)
    sim = summarize(sim_result, tiers, a.ttft_slo)
    sim_counts = [s["requests"] for s in sim_result.replica_summary()]
    served = [x["summary"] for x in runs]
    real = {k: float(np.median([x[k] for x in served])) for k in KEYS}
    spread = {k: max(abs(x[k] - real[k]) for x in served) / real[k] for k in KEYS}
    per_run = [bench.forecast(requests, name, x["fit"].model, x.pop("fit").latency, tiers) for x in runs]
    forecasts = {k: float(np.median([f[k] for f in per_run])) for k in KEYS}
    out = {
        "served_runs": runs,
        "served_median": real,
        "served_spread": spread,
        "served_loo": leave_one_out(served, KEYS),
        "sim": sim,
        "sim_per_run": forecasts,
        "error": rel(forecasts, real),
        "pooled_error": rel(sim, real),
        "sim_per_replica": sim_counts,
        "lost": sum(x["lost"] for x in runs),
    }
    print(
        f"\n{name}: requests per replica {[x['per_replica'] for x in runs]} (sim {sim_counts}), lost {out['lost']} "
        f"in {a.repeats} runs"
    )
    for k in KEYS:
        print(
            f"  {k:<16} served {real[k]:9.1f} (runs +-{spread[k]:.0%}; one run against the others "
            f"{pct(out['served_loo'][k])})  forecast {forecasts[k]:9.1f}  error {pct(out['error'][k])} (pooled: "
            f"{pct(out['pooled_error'][k])})"
        )
    for tname, st in sim.get("tiers", {}).items():
        att = [x.get("tiers", {}).get(tname, {}).get("slo_attainment") for x in served]
        print(f"  tier {tname}: SLO attainment served {att}, sim {st.get('slo_attainment')}")
    adjusted = []
    for x in runs:  # each run given how fast each replica really ran in it: this CPU's drift apart from the model
        x["speed_factors"] = [
            speed_factor(bench.steps_in(tuple(x["window"]), k), pooled.model)
            for k in range(len(bench.cluster.replicas))
        ]
        perfs = [Scaled(pooled.model, f) for f in x["speed_factors"]]
        s = summarize(bench.cluster.simulate(requests, name, perfs, pooled.latency), tiers, a.ttft_slo)
        adjusted.append({k: (s[k] - x["summary"][k]) / x["summary"][k] for k in KEYS})
    out["speed_adjusted_error"] = {k: float(np.median([e[k] for e in adjusted])) for k in KEYS}
    print(
        f"  speed-adjusted: speed factors {[[round(f, 2) for f in x['speed_factors']] for x in runs]}; errors "
        + ", ".join(f"{k} {out['speed_adjusted_error'][k]:+.1%}" for k in KEYS)
    )
    out["sim_engine_ttft_ms"] = sim["median_ttft_ms"] - pooled.latency * 1e3
    print(
        "  served TTFT split, medians per run (ms): "
        + "; ".join(
            ", ".join(f"{part} {x['median_ttft_split_ms'][part] or float('nan'):.0f}" for part in SPLITS) for x in runs
        )
        + f"; simulated engines' part {out['sim_engine_ttft_ms']:.0f} ms"
    )
    return out


def fit_record(fits: list[ProbeFit], pooled: Forecast, args: argparse.Namespace) -> dict:
    each = [
        {
            "compute": f.model.compute,
            "per_seq_s": f.model.per_seq,
            "latency_s": f.latency,
            "median_ttft_split_ms": f.split_ms,
            "sim_engine_ttft_ms": f.sim_ttft_ms,
            "unexplained_s": f.unexplained,
            "steps": f.steps,
            "window": f.window,
        }
        for f in fits
    ]
    return {
        "compute": pooled.model.compute,
        "per_seq_s": pooled.model.per_seq,
        "latency_s": pooled.latency,
        "probe_load": args.probe_load,
        "probe_requests": args.probe_requests,
        "each": each,
    }


def summary_lines(report: dict) -> None:
    r = report["routers"]
    if "round-robin" in r and "resource-aware" in r:
        pairs = zip(r["resource-aware"]["served_runs"], r["round-robin"]["served_runs"], strict=True)
        ratios = [a["summary"]["p99_ttft_ms"] / b["summary"]["p99_ttft_ms"] for a, b in pairs]
        report["p99_ttft_ratio_per_run"] = ratios
        print(
            f"\np99 TTFT resource-aware / round-robin per run: {', '.join(f'{x:.2f}' for x in ratios)}; "
            f"median {float(np.median(ratios)):.2f} (target <= 0.7)"
        )
    for label, key in (
        ("forecast", "error"),
        ("pooled probes", "pooled_error"),
        ("speed-adjusted", "speed_adjusted_error"),
        ("one served run against the others", "served_loo"),
    ):
        worst = [abs(e) for x in r.values() for k, e in x[key].items() if e is not None and k.startswith("median")]
        if worst:
            print(f"worst |error| of median TTFT/ITL over routers, {label}: {max(worst):.1%}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the tiny random Llama, built here)")
    ap.add_argument("--profile", default=None, help="profile CSV of this model (default: measured now)")
    ap.add_argument("--profile-budget-s", type=float, default=120.0)
    ap.add_argument("--routers", default="round-robin,resource-aware")
    ap.add_argument(
        "--policy",
        default="slai",
        choices=["slai", "sarathi", "sarathi-spf"],
        help="the plugin's policy in each replica (the probes read its step logs)",
    )
    ap.add_argument("--max-num-seqs", default="8,4", help="per replica: the second has half the capacity")
    ap.add_argument("--qps", type=float, default=None, help="default: the highest load resource-aware holds (sim)")
    ap.add_argument("--num-requests", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3, help="served runs per router (alternating); medians reported")
    ap.add_argument("--trace", default=None, help="trace CSV (default: short synthetic requests)")
    ap.add_argument("--tiers", default="paying:0.5:tbt=0.2,free:0.5:tbt=1.0")
    ap.add_argument("--ttft-slo", type=float, default=1.0, help="TTFT SLO (s) for the attainment per tier")
    # A probe's start and drain (few requests, one replica idle) run the engines less contended than a run's steady
    # state; with 40-request probes the runs' steps took a median 9% longer than fitted, with 80 they did not.
    ap.add_argument("--probe-requests", type=int, default=80, help="requests of each probe")
    ap.add_argument("--probe-load", type=float, default=1.0, help="probes run at this x the load")
    ap.add_argument("--probe-router", default="resource-aware", help="router of the probes")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    args = ap.parse_args()
    args.work = tempfile.mkdtemp(prefix="serve_routing.")
    return args


def main() -> None:
    args = parse_args()
    from llmsched.integrations.ray_serve import server
    from llmsched.integrations.ray_serve.app import ServeConfig
    from llmsched.integrations.ray_serve.replica import ReplicaOptions
    from llmsched.integrations.vllm.models import build_tiny_llama

    work = Path(args.work)
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
    opts = tuple(ReplicaOptions(max_num_seqs=b, capacity=c) for b, c in zip(seqs, caps, strict=True))
    routers = args.routers.split(",")
    cfg = ServeConfig(
        model, opts, router=routers[0], policy=args.policy, tiers=args.tiers, steps_dir=str(work / "steps")
    )
    served = server.start(cfg, port=args.port, num_cpus=max(2, len(opts)))
    print(f"start-up of the {len(opts)}-replica app: {served.startup_s:.1f} s", file=sys.stderr)
    report: dict = {"startup_s": served.startup_s, "capacities": caps, "routers": {}, "steps_dir": str(work / "steps")}
    try:
        import httpx

        warm = {"prompt": [5] * 8, "max_tokens": 2}
        httpx.post(served.url + "/v1/completions", json=warm, timeout=60).raise_for_status()  # makes the router
        replicas = replica_reports(served.url)
        report["replicas"] = replicas
        cluster = ServedCluster(tuple(replicas), tuple(caps), args.policy, spec.max_len, args.seed)
        bench = Bench(args, served.url, cluster, perf, trace, spec)
        mean_decode = float(np.mean([r.decode_len for r in bench.workload(1.0)[0]]))
        first = Forecast.of([bench.probe(0.1 * sum(caps) / mean_decode)])  # gently: the profile ran alone
        qps = args.qps or bench.pick_qps(first)
        report["qps"] = qps
        print(f"qps {qps:.2f}, {args.num_requests} requests", file=sys.stderr)
        runs, fits = served_runs(bench, routers, qps)
        pooled = Forecast.of(fits)
        report["calibration"] = fit_record(fits, pooled, args)
        print(
            f"median of {len(fits)} probes: {pooled.model.name}; latency {pooled.latency * 1e3:.0f} ms", file=sys.stderr
        )
        for name in routers:
            report["routers"][name] = compare_router(bench, name, runs[name], pooled, qps)
    finally:
        server.stop(served)
    summary_lines(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")


if __name__ == "__main__":
    main()
