"""Simulator speed: 16,384 requests of the paper's trace at 1.2 QPS with sarathi, on one core.

Prints wall seconds (median of --repeats runs), simulated batches and tokens per wall second, and peak RSS.
Targets (issue "Simulator core"): <= 10 s and <= 1 GiB; aim 5 s.

    python benchmarks/sim_speed.py [--trace ../shared/traces/sharegpt4_llama2.csv] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces" / "sharegpt4_llama2.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(SHARED) if SHARED.exists() else None)
    ap.add_argument("--policy", default="sarathi")
    ap.add_argument("--num-requests", type=int, default=16384)
    ap.add_argument("--qps", type=float, default=1.2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    spec = RunSpec(
        policy=args.policy, workload=WorkloadConfig(trace=args.trace, num_requests=args.num_requests, qps=args.qps)
    )
    walls, summary = [], {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, summary = run(spec)
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    tokens = summary["total_input_tokens"] + summary["total_output_tokens"]
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "trace": args.trace or "built-in",
                "policy": args.policy,
                "requests": args.num_requests,
                "qps": args.qps,
                "wall_s_median": round(wall, 2),
                "wall_s_all": [round(w, 2) for w in walls],
                "batches": summary["num_batches"],
                "batches_per_s": round(summary["num_batches"] / wall),
                "simulated_tokens_per_s": round(tokens / wall),
                "peak_rss_mib": round(rss_mib),
                "target_wall_s": 10.0,
                "wall_vs_target": round(wall / 10.0, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
