"""Simulator fidelity against a real vLLM engine: the same requests and arrival times through both, the
simulator using the batch-time model profiled on this machine (`llmsched profile --backend vllm`).

Per policy, the relative error (sim - real) / real of median and p99 TTFT and ITL, where "real" is the median
over --repeats runs of the real engine (each in a fresh process, policies alternating). The spread of the real
runs around their median is printed beside it: on a shared CPU it is the floor no model can beat. Without
--profile, the engine is profiled first, in this session, so the profile and the runs see the same machine.

This machine's speed also drifts between runs (the same batch shapes take 30% longer in one run than in the
next). So a second comparison separates that from the simulator's scheduling: each real run records its steps
(shape, time; `bench-engine --steps-out`), its speed factor is the median over its steps of real time / profiled
prediction, and the simulator, its model scaled by that one number, is compared with that run ("speed-adjusted":
the median over runs of the per-run errors). A third draws each simulated step's factor from that run's measured
ratios ("with the spread"): a constant factor leaves the step-to-step jitter out, and p99 ITL is the slow steps.
A fourth draws them by step kind ("by kind"): steps with a prefill chunk from the prefill steps' ratios, decode-only
steps from theirs (`perf.base.step_ratios_by_kind`); the drawn comparisons take, per run, the median over --draws
seeded draws. A fifth, "in sequence", replays each kind's ratios in the order measured (`perf.base.InSequence`):
this machine's slow spells last many steps, and the queues they build make the TTFT tail, which independent draws
spread thin. Every comparison but the first reads the run's own step log: they check the simulator's scheduling
given how the machine ran, not a forecast of it.
The simulator runs `vllm-v1` (our model of vLLM's scheduler) for `vllm-default` and the same policy for plugin
runs, with vLLM's block size, KV pool, token budget and max_num_seqs. Target: |error| <= 10% (aim 5%).

The workload is the built-in lengths scaled down as in engine_slai.py (prompt / 4, decode / 8) unless --trace.

    python benchmarks/fidelity.py --model DIR [--profile FILE] [--qps 2] [--num-requests 80] [--repeats 3] [--draws 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from engine_slai import bench, scaled_trace

from llmsched.commands.bench_engine import model_max_len
from llmsched.metrics import summarize
from llmsched.perf.base import BatchShape, InSequence, Jittered, Scaled, speed_factor, step_ratios_by_kind
from llmsched.perf.fitted import load_perf_model
from llmsched.perf.hf_config import register, spec_from_hf
from llmsched.policies import make_policy
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.workload import WorkloadConfig, build_requests

SIM_POLICY = {"vllm-default": "vllm-v1"}
KEYS = ("median_ttft_ms", "p99_ttft_ms", "median_itl_ms", "p99_itl_ms")


def steps_of(steps_csv: Path) -> list[tuple[float, BatchShape]]:
    with open(steps_csv) as f:
        rows = list(csv.DictReader(f))
    return [(float(r["step_ms"]) / 1e3, BatchShape(*(float(r[k]) for k in BatchShape._fields))) for r in rows]


def simulate(policy: str, wl: WorkloadConfig, perf, num_blocks: int, max_len: int) -> dict:
    requests, tiers = build_requests(wl, max_len)  # the seed bench-engine uses: same lengths, tiers, arrivals
    cfg = EngineConfig(num_blocks=num_blocks, token_budget=512, max_num_seqs=128, block_size=128,
                       watermark=0.0 if policy == "vllm-default" else 0.01, max_model_len=max_len)  # fmt: skip
    return summarize(SimEngine(cfg, make_policy(SIM_POLICY.get(policy, policy)), perf).run(requests), tiers)


def per_run_errors(policy: str, wl: WorkloadConfig, perfs: list, runs: list[dict], blocks: int, max_len: int) -> dict:
    """The median over real runs of the relative error of the simulator given that run's model (`perfs`: one per
    run, or a list of seeded draws per run, whose summaries' medians are that run's prediction)."""

    def predicted(models: Any) -> dict:
        sims = [simulate(policy, wl, m, blocks, max_len) for m in (models if isinstance(models, list) else [models])]
        return {k: statistics.median(s[k] for s in sims) for k in KEYS}

    per_run = [(predicted(perf), r) for perf, r in zip(perfs, runs, strict=True)]
    return {k: statistics.median((s[k] - r[k]) / r[k] for s, r in per_run) for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--profile", help="profile CSV or fitted JSON from `llmsched profile` (default: profile now)")
    ap.add_argument("--policies", default="vllm-default,slai")
    ap.add_argument("--qps", type=float, default=2.0)
    ap.add_argument("--num-requests", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    # One seeded draw of the step spread is one sample of its tails: a p99 over 200 requests is its 2nd-largest
    # value, so the drawn comparisons take each run's median over several draws.
    ap.add_argument("--draws", type=int, default=5, help="seeded draws of the step spread per run (medians)")
    ap.add_argument("--trace", default=None)
    ap.add_argument("--tiers", default="paying:0.1:tbt=0.6,free:0.9:tbt=2.0")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fidelity-"))
    trace = Path(args.trace) if args.trace else tmp / "scaled.csv"
    if not args.trace:
        scaled_trace(trace)
    profile = args.profile
    if profile is None:
        profile = str(tmp / "profile.csv")
        subprocess.run([sys.executable, "-c", "from llmsched.cli import main; main()", "profile", "--backend", "vllm",
                        "--model", args.model, "--out", profile], check=True)  # fmt: skip
    spec = register(spec_from_hf(args.model))
    perf = load_perf_model(profile, spec.name)
    max_len = model_max_len(args.model)
    wl = WorkloadConfig(trace=str(trace), num_requests=args.num_requests, qps=args.qps, tiers=args.tiers, seed=42)

    policies = args.policies.split(",")
    runs: dict[str, list[dict]] = {p: [] for p in policies}
    factors: dict[str, list[float]] = {p: [] for p in policies}
    ratios: dict[str, list[dict[bool, list[float]]]] = {p: [] for p in policies}
    for rep in range(args.repeats):
        for policy in policies:
            steps = tmp / f"steps-{rep}"
            runs[policy].append(bench(args.model, policy, trace, args.qps, args.num_requests, args.tiers,
                                      "--steps-out", str(steps)))  # fmt: skip
            measured = steps_of(steps / f"{policy}.csv")
            factors[policy].append(speed_factor(measured, perf))
            ratios[policy].append(step_ratios_by_kind(measured, perf))
    report = {}
    for policy in policies:
        real = {k: statistics.median(r[k] for r in runs[policy]) for k in KEYS}
        spread = {k: max(abs(r[k] - real[k]) for r in runs[policy]) / real[k] for k in KEYS}
        blocks = runs[policy][0]["kv_blocks"]
        sim = simulate(policy, wl, perf, blocks, max_len)
        error = {k: (sim[k] - real[k]) / real[k] for k in KEYS}
        adjusted = per_run_errors(policy, wl, [Scaled(perf, f) for f in factors[policy]], runs[policy], blocks, max_len)
        pooled = [[Jittered(perf, q[True] + q[False], seed=s) for s in range(args.draws)] for q in ratios[policy]]
        spread_adj = per_run_errors(policy, wl, pooled, runs[policy], blocks, max_len)
        by_kind_models = [[Jittered(perf, q, seed=s) for s in range(args.draws)] for q in ratios[policy]]
        by_kind = per_run_errors(policy, wl, by_kind_models, runs[policy], blocks, max_len)
        in_order = [InSequence(perf, q) for q in ratios[policy]]
        in_sequence = per_run_errors(policy, wl, in_order, runs[policy], blocks, max_len)
        report[policy] = {"real": real, "real_runs": {k: [r[k] for r in runs[policy]] for k in KEYS},
                          "real_spread": spread, "sim": {k: sim[k] for k in KEYS}, "error": error,
                          "speed_factors": factors[policy], "speed_adjusted_error": adjusted,
                          "spread_adjusted_error": spread_adj, "spread_by_kind_error": by_kind,
                          "in_sequence_error": in_sequence}  # fmt: skip
        print(f"{policy}: " + ", ".join(f"{k} real {real[k]:.1f} (runs +-{spread[k]:.0%}) sim {sim[k]:.1f} "
                                        f"({error[k]:+.1%})" for k in KEYS))  # fmt: skip
        print(f"  speed factors {', '.join(f'{f:.2f}' for f in factors[policy])}; speed-adjusted errors: "
              + ", ".join(f"{k} {adjusted[k]:+.1%}" for k in KEYS))  # fmt: skip
        print(
            "  with each run's step-to-step spread (each step's time drawn from the run's measured ratios): "
            + ", ".join(f"{k} {spread_adj[k]:+.1%}" for k in KEYS)
        )
        print("  drawn by step kind (prefill steps from prefill steps' ratios): "
              + ", ".join(f"{k} {by_kind[k]:+.1%}" for k in KEYS))  # fmt: skip
        print("  each kind's ratios in measured order: " + ", ".join(f"{k} {in_sequence[k]:+.1%}" for k in KEYS))
    worst = max(abs(e) for p in report.values() for e in p["error"].values())
    worst_adj = max(abs(e) for p in report.values() for e in p["speed_adjusted_error"].values())
    worst_spread = max(abs(e) for p in report.values() for e in p["spread_adjusted_error"].values())
    worst_kind = max(abs(e) for p in report.values() for e in p["spread_by_kind_error"].values())
    worst_seq = max(abs(e) for p in report.values() for e in p["in_sequence_error"].values())
    print(f"qps {args.qps}, {args.num_requests} requests, {args.repeats} real runs per policy: worst |error| "
          f"{worst:.1%}, speed-adjusted {worst_adj:.1%}, with the spread {worst_spread:.1%}, by kind {worst_kind:.1%}, "
          f"in sequence {worst_seq:.1%} "
          "(target <= 10%, aim 5%)")  # fmt: skip
    print(json.dumps({"setup": vars(args) | {"profile": profile}, "report": report}, sort_keys=True))


if __name__ == "__main__":
    main()
