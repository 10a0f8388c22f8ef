"""The paper's headline on its own trace (issue "SLAI ..."): capacity ratio SLAI / Sarathi-Serve, median-TTFT
reduction at Sarathi's capacity, each tier's p99 TBT at SLAI's capacity, the anti-starvation preset at the same
QPS, and the wall time of the whole reproduction (two capacity searches plus three runs).

Targets: median-TTFT reduction >= 0.53 and capacity ratio >= 1.26 (the paper); slai-kv-guard keeps >= 90% of
SLAI's median-TTFT gain with p99 TTFT no worse than Sarathi FCFS.

    python benchmarks/paper_targets.py [--trace ../shared/traces/sharegpt4_llama2.csv] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from llmsched.studies.executor import Executor
from llmsched.studies.reproduce import BASELINE, GUARD, SLAI, reproduce

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces" / "sharegpt4_llama2.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=str(SHARED) if SHARED.exists() else None)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with Executor(workers=args.workers) as ex:
        rep = reproduce(ex, args.trace, progress=False)
    wall = time.perf_counter() - t0
    res = rep.result()
    med, p99 = res["median_ttft_ms"], res["p99_ttft_ms"]
    gain = med[BASELINE] - med[SLAI]
    kept = (med[BASELINE] - med[GUARD]) / gain if gain > 0 else None
    out = {
        "trace": args.trace or "built-in",
        "capacity_qps": res["capacity_qps"],
        "capacity_ratio": res["capacity_ratio"],
        "median_ttft_reduction": res["median_ttft_reduction"],
        "at_qps": res["at_qps"],
        "median_ttft_ms": med,
        "p99_ttft_ms": p99,
        "slai_tiers_at_capacity": res["slai_tiers_at_capacity"],
        "kv_guard_gain_kept": kept,
        "kv_guard_p99_vs_sarathi": p99[GUARD] / p99[BASELINE],
        "runs": sum(len(s.points) for s in rep.searches) + 3,
        "wall_s": round(wall, 1),
        "targets": {
            "median_ttft_reduction": 0.53,
            "capacity_ratio": 1.26,
            "kv_guard_gain_kept": 0.9,
            "kv_guard_p99_vs_sarathi": 1.0,
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
