"""Simulator speed, on one core, in two settings:
- the paper's: 16,384 requests of its trace at 1.6 QPS, 2,100 s time limit, per policy (target <= 1.5 s each;
  issue "Plan a deployment");
- the Mooncake conversation trace (12,031 requests) on 4 replicas of Llama-3.1-8B on H100 80GB (roofline estimate),
  SLAI behind a cache-aware router, prefix caching on, as `benchmarks/prefix_cluster.py` runs it (target < 20 s;
  issue "KV-cache reuse end to end"). Skipped if the trace is missing (it lives in ../shared).

Prints per case the wall and CPU seconds of `run()` (simulation and summary; median of --repeats runs, after one
untimed run that loads the trace), the batches simulated and how many of them ran without asking the policy
(`Policy.repeats`, `Policy.holds`), peak RSS, and the machine's load average (the figures are only comparable at
equal load).

    python benchmarks/sim_speed.py [--policies sarathi,slai | --policies ''] [--mooncake FILE | --mooncake '']
        [--router cache-aware] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

from llmsched.sim import engine
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig

TARGET_S = 1.5
MOONCAKE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake_conversation.jsonl"
MOONCAKE_TARGET_S = 20.0


def timed(spec: RunSpec, repeats: int, bulk: list[int]) -> dict:
    run(spec)
    walls, cpus, summary = [], [], {}
    for _ in range(repeats):
        bulk[0] = 0
        w, c = time.perf_counter(), time.process_time()
        _, summary = run(spec)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {
        "wall_s_median": round(statistics.median(walls), 2),
        "cpu_s_median": round(statistics.median(cpus), 2),
        "cpu_s_all": [round(c, 2) for c in cpus],
        "batches": summary["num_batches"],
        "batches_without_asking": bulk[0],
        "completed": summary["completed"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=None, help="default: the paper's trace (shipped)")
    ap.add_argument("--policies", default="sarathi,slai")
    ap.add_argument("--num-requests", type=int, default=16384)
    ap.add_argument("--qps", type=float, default=1.6)
    ap.add_argument("--time-limit", type=float, default=2100.0)
    ap.add_argument("--mooncake", default=str(MOONCAKE), help="the Mooncake JSONL trace ('' to skip that case)")
    ap.add_argument("--router", default="cache-aware", help="the Mooncake case's router")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bulk = [0]

    def counted(run_batches):  # the batches an engine ran without asking its policy (`_repeat`, `_hold`)
        def wrapper(self: engine.SimEngine, *args):
            before = len(self.log.start)
            t = run_batches(self, *args)
            bulk[0] += len(self.log.start) - before
            return t

        return wrapper

    engine.SimEngine._repeat = counted(engine.SimEngine._repeat)  # type: ignore[method-assign]
    engine.SimEngine._hold = counted(engine.SimEngine._hold)  # type: ignore[method-assign]
    out: dict = {"load_average": [round(x, 2) for x in os.getloadavg()], "target_s": TARGET_S, "policies": {}}
    for policy in filter(None, args.policies.split(",")):  # --policies '': the Mooncake case alone
        wl = WorkloadConfig(trace=args.trace, num_requests=args.num_requests, qps=args.qps)
        spec = RunSpec(policy=policy, workload=wl, time_limit=args.time_limit)
        out["policies"][policy] = timed(spec, args.repeats, bulk)
    if args.mooncake and Path(args.mooncake).exists():
        spec = RunSpec(
            policy="slai",
            workload=WorkloadConfig(trace=args.mooncake),
            model="llama-3.1-8b",
            gpu="h100-80gb",
            replicas="4",
            router=args.router,
            enable_prefix_caching=True,
        )
        out["mooncake"] = {"target_s": MOONCAKE_TARGET_S, "router": args.router, **timed(spec, args.repeats, bulk)}
    elif args.mooncake:
        out["mooncake"] = f"skipped: {args.mooncake} not found (pass --mooncake FILE)"
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
