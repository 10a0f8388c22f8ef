"""Simulator speed: 16,384 requests of the paper's setting (its trace, 1.6 QPS, 2,100 s time limit) for each
policy, on one core.

Prints per policy the wall and CPU seconds of `run()` (median of --repeats runs, after one untimed run that
loads the trace), the batches simulated and how many of them ran without asking the policy (`Policy.repeats`),
peak RSS, and the machine's load average (the figures are only comparable at equal load).
Target (issue "Plan a deployment"): <= 1.5 s per policy.

    python benchmarks/sim_speed.py [--policies sarathi,slai] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

from llmsched.sim import engine
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig

TARGET_S = 1.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=None, help="default: the paper's trace (shipped)")
    ap.add_argument("--policies", default="sarathi,slai")
    ap.add_argument("--num-requests", type=int, default=16384)
    ap.add_argument("--qps", type=float, default=1.6)
    ap.add_argument("--time-limit", type=float, default=2100.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bulk = [0]
    repeat = engine.SimEngine._repeat

    def counted(self: engine.SimEngine, until: float) -> float:
        before = len(self.log.start)
        t = repeat(self, until)
        bulk[0] += len(self.log.start) - before
        return t

    engine.SimEngine._repeat = counted  # type: ignore[method-assign]
    out = {"load_average": [round(x, 2) for x in os.getloadavg()], "target_s": TARGET_S, "policies": {}}
    for policy in args.policies.split(","):
        wl = WorkloadConfig(trace=args.trace, num_requests=args.num_requests, qps=args.qps)
        spec = RunSpec(policy=policy, workload=wl, time_limit=args.time_limit)
        run(spec)
        walls, cpus, summary = [], [], {}
        for _ in range(args.repeats):
            bulk[0] = 0
            w, c = time.perf_counter(), time.process_time()
            _, summary = run(spec)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        out["policies"][policy] = {
            "wall_s_median": round(statistics.median(walls), 2),
            "cpu_s_median": round(statistics.median(cpus), 2),
            "cpu_s_all": [round(c, 2) for c in cpus],
            "batches": summary["num_batches"],
            "batches_without_asking": bulk[0],
            "completed": summary["completed"],
        }
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
