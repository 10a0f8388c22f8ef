"""llmsched policies against a baseline on a real vLLM-CPU engine (issues "Run the policies inside vLLM", "A policy
beyond SLAI").

Each policy runs in its own fresh process (`llmsched bench-engine --json`), alternating, `--repeats` times; the
script prints per-policy medians and, for each policy against `--baseline`: median TTFT, output throughput and
output tokens per engine-second (the run's output tokens over the summed time of its steps, from
`bench-engine --steps-out`: the engine's work per token, which the arrival process does not dilute), and the paying
tier's p99 ITL against its SLO. `spread` is each figure's floor on this machine: per policy, the median over runs of
|the run / the median of the other runs - 1| (`metrics.leave_one_out`); a ratio nearer 1 than that is not resolved.
Targets: SLAI's median TTFT <= 0.5x the default's at a load where the default's is >= 1 s, throughput within 5%;
deadline-sized's median TTFT no worse than SLAI's, paying p99 ITL within its SLO, throughput within 5%.

The workload is the built-in ShareGPT V3 lengths scaled down (prompt / 4, decode / 8, at least 1) so a 135M-parameter
model on 2 CPU cores sees the same shape of load at a rate it can serve. Policies that size batches by time
(deadline-sized) need the engine's batch-time model: `--perf-model` (a `llmsched profile --backend vllm` CSV or its
fitted JSON).

    python benchmarks/engine_slai.py --model DIR [--qps 3] [--num-requests 80] [--repeats 2]
        [--policies vllm-default,slai] [--baseline vllm-default] [--perf-model P.csv] [--out F]
    (DIR from `llmsched model smollm2 DIR`, after `bash scripts/setup-dev.sh --models`)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llmsched.commands.options import PolicyOption
from llmsched.integrations.vllm.steps import read_step_times
from llmsched.metrics.summary import leave_one_out
from llmsched.workload import load_trace
from llmsched.workload.tiers import parse_tiers

TIERS = "paying:0.1:tbt=0.6,free:0.9:tbt=2.0"
KEYS = ("median_ttft_ms", "p99_ttft_ms", "output_throughput", "tokens_per_engine_s", "paying_p99_itl_ms",
        "free_p99_itl_ms", "mean_schedule_ms")  # fmt: skip


PAIRED = ("median_ttft_ms", "output_throughput", "tokens_per_engine_s")


def scaled_trace(path: Path) -> None:
    rows = load_trace("sharegpt-v3")
    lines = [f"{max(1, r.prompt_len // 4)},{max(1, r.decode_len // 8)}" for r in rows]
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "\n".join(lines) + "\n")


def bench(model: str, policy: str, trace: Path, qps: float, n: int, tiers: str = TIERS, *extra: str) -> dict:
    """One `llmsched bench-engine --json` run in a fresh process; its summary."""
    cmd = [sys.executable, "-c", "from llmsched.cli import main; main()", "bench-engine", "--model", model,
           "--policies", policy, "--trace", str(trace), "--qps", str(qps), "--num-requests", str(n),
           "--tiers", tiers, "--json", *extra]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["policies"][policy]


def figures(summary: dict, steps: Path) -> dict:
    """One run's figures; tokens per engine-second from its step log."""
    busy = sum(t for t, _ in read_step_times(steps))
    tier = summary.get("tiers", {})
    return {
        "median_ttft_ms": summary["median_ttft_ms"],
        "p99_ttft_ms": summary["p99_ttft_ms"],
        "output_throughput": summary["output_throughput"],
        "tokens_per_engine_s": summary["total_output_tokens"] / busy if busy else None,
        "engine_busy_s": busy,
        "paying_p99_itl_ms": tier.get("paying", {}).get("p99_itl_ms"),
        "free_p99_itl_ms": tier.get("free", {}).get("p99_itl_ms"),
        "completed": summary["completed"],
        "mean_schedule_ms": summary["mean_schedule_ms"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--qps", type=float, default=3.0)
    ap.add_argument("--num-requests", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--policies", default="vllm-default,slai", help="comma-separated; each run in its own process")
    ap.add_argument("--baseline", default=None, help="the policy the others are compared with (default: the first)")
    ap.add_argument("--perf-model", default=None, help="the engine's batch-time model, for time-sized policies")
    ap.add_argument("--tiers", default=TIERS)
    ap.add_argument("--policy-option", action="append", default=[], help="[POLICY:]KEY=VALUE, as bench-engine's")
    ap.add_argument("--time-limit", type=float, default=None, help="stop each run after this many seconds")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    baseline = args.baseline or policies[0]
    if baseline not in policies:
        sys.exit(f"--baseline {baseline} is not one of --policies {args.policies}")
    slo = {t.name: t.tbt * 1e3 for t in parse_tiers(args.tiers)}
    extra = ["--perf-model", args.perf_model] if args.perf_model else []
    extra += ["--time-limit", str(args.time_limit)] if args.time_limit else []

    def options(policy: str) -> list[str]:  # each run gets its own policy's options and the unprefixed ones
        own = [o for o in args.policy_option if PolicyOption().convert(o, None, None)[0] in (None, policy)]
        return [a for o in own for a in ("--policy-option", o)]

    runs: dict[str, list[dict]] = {p: [] for p in policies}
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "scaled.csv"
        scaled_trace(trace)
        for k in range(args.repeats):
            for policy in policies:
                steps = Path(tmp) / f"steps{k}"
                s = bench(args.model, policy, trace, args.qps, args.num_requests, args.tiers, *extra,
                          *options(policy), "--steps-out", str(steps))  # fmt: skip
                runs[policy].append(figures(s, steps / f"{policy}.csv"))
                print(policy, json.dumps(runs[policy][-1]), file=sys.stderr, flush=True)

    def med(policy: str, key: str) -> float | None:
        vals = [r[key] for r in runs[policy] if r[key] is not None]
        return statistics.median(vals) if vals else None

    out: dict = {p: {**{k: med(p, k) for k in KEYS}, "completed": [r["completed"] for r in runs[p]], "runs": runs[p],
                     "spread": leave_one_out(runs[p], KEYS[:5])} for p in policies}  # fmt: skip
    b = out[baseline]
    out["ratios"] = {
        p: {
            "median_ttft_vs_baseline": out[p]["median_ttft_ms"] / b["median_ttft_ms"],
            "output_throughput_vs_baseline": out[p]["output_throughput"] / b["output_throughput"],
            "tokens_per_engine_s_vs_baseline": out[p]["tokens_per_engine_s"] / b["tokens_per_engine_s"],
            "paying_p99_itl_vs_slo": out[p]["paying_p99_itl_ms"] / slo["paying"] if "paying" in slo else None,
            # run k of p against run k of the baseline (adjacent in time): how far one pair's ratio can stray
            "pairs": {k: [r[k] / q[k] for r, q in zip(runs[p], runs[baseline], strict=True)] for k in PAIRED},
        }
        for p in policies
        if p != baseline
    }
    out["baseline_median_ttft_at_least_1s"] = b["median_ttft_ms"] >= 1000
    out["setup"] = {"qps": args.qps, "num_requests": args.num_requests, "repeats": args.repeats, "tiers": args.tiers,
                    "policies": policies, "baseline": baseline, "perf_model": args.perf_model,
                    "time_limit": args.time_limit, "policy_options": args.policy_option}  # fmt: skip
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
