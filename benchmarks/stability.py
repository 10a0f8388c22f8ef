"""Stability: the theory's bound against the highest stable rate each policy reaches in simulation.

Single replica (the default GPU): capacity under `--slo stable` for RAD, Sarathi (fixed 512), vLLM v0 and
FasterTransformer, as fractions of `stability_bound_qps`. Four heterogeneous replicas: RAD with the
resource-aware router and with round-robin, as fractions of the summed bound. Figures (PNG) go to --out:
the throughput curve, the stability regions, and the queue over time at a stable and an unstable rate.

    python benchmarks/stability.py --out /tmp/stability   # one run on 2 shared cores at nice 19: about 20 minutes
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from llmsched.report.theory_plots import queue_over_time, stability_region, throughput_curve
from llmsched.studies.bounds import limits, spec_bound
from llmsched.studies.capacity import search
from llmsched.studies.executor import Executor
from llmsched.studies.run import run
from llmsched.studies.slo import SLO
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.theory import memory_cap, throughput
from llmsched.workload import WorkloadConfig

SINGLE_POLICIES = ("rad", "sarathi", "vllm", "fastertransformer")
CLUSTER = "rtx6000ada:2,a100-80gb:2"


def capacities(specs: list[RunSpec], bound_qps: float, args: argparse.Namespace) -> list[float]:
    with Executor("process", args.workers) as ex:
        found = search(specs, SLO(stable=True), ex, start_qps=round(1.05 * bound_qps, 3), granularity=args.granularity)
    return [s.capacity for s in found]


def single(args: argparse.Namespace, out: Path) -> dict:
    base = RunSpec(workload=WorkloadConfig(num_requests=args.num_requests))
    b = spec_bound(base, (512,))
    w, tile = b.workload, b.tiles[0]
    perf, cap = perf_model(base), memory_cap(w, limits(base))
    xs = list(range(16, 2049, 16))
    throughput_curve(out / "throughput_curve.png", xs, [throughput(perf, x, w) for x in xs], tile.tokens, cap)
    caps = capacities([replace(base, policy=p) for p in SINGLE_POLICIES], b.qps, args)
    achieved = dict(zip(SINGLE_POLICIES, caps, strict=True))
    stability_region(
        out / "stability_single.png",
        f"one {base.gpu}, {base.model}: highest stable rate",
        b.qps,
        achieved,
        {"512": b.fixed_qps(512)},
    )
    series = {}
    for frac in (0.9, 1.1):
        result, _ = run(replace(base, policy="rad").at_qps(frac * b.qps))
        series[f"RAD at {frac:.1f} x bound ({frac * b.qps:.2f} req/s)"] = (
            result.batches.start,
            [x + y for x, y in zip(result.batches.waiting, result.batches.running, strict=True)],
        )
    queue_over_time(out / "queue_single.png", f"RAD, one {base.gpu}: requests in the system", series)
    return {
        "stability_bound_qps": b.qps,
        "optimal_tile_tokens": tile.tokens,
        "fixed_budget_bound_qps": {"512": b.fixed_qps(512)},
        "capacity_qps": achieved,
        "fraction_of_bound": {p: c / b.qps for p, c in achieved.items()},
    }


def cluster(args: argparse.Namespace, out: Path) -> dict:
    base = RunSpec(policy="rad", workload=WorkloadConfig(num_requests=args.cluster_requests), replicas=CLUSTER)
    b = spec_bound(base, (512,))
    variants = {"rad + resource-aware": "resource-aware", "rad + round-robin": "round-robin"}
    caps = capacities([replace(base, router=r) for r in variants.values()], b.qps, args)
    achieved = dict(zip(variants, caps, strict=True))
    stability_region(out / "stability_cluster.png", f"{CLUSTER}: highest stable rate", b.qps, achieved)
    series = {}
    for label, router in variants.items():
        result, _ = run(replace(base, router=router).at_qps(0.9 * b.qps))
        series[f"{label} at 0.9 x bound"] = (
            result.batches.start,
            [x + y for x, y in zip(result.batches.waiting, result.batches.running, strict=True)],
        )
    queue_over_time(out / "queue_cluster.png", f"{CLUSTER}: requests in the system", series)
    return {
        "replicas": CLUSTER,
        "stability_bound_qps": b.qps,
        "optimal_tile_tokens": [t.tokens for t in b.tiles],
        "capacity_qps": achieved,
        "fraction_of_bound": {k: c / b.qps for k, c in achieved.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="Folder for the PNGs and stability.json.")
    ap.add_argument("--num-requests", type=int, default=4000, help="Requests per single-replica run.")
    ap.add_argument("--cluster-requests", type=int, default=12000, help="Requests per four-replica run.")
    ap.add_argument("--granularity", type=float, default=0.01, help="Capacity search: bracket width / top.")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-cluster", action="store_true")
    args = ap.parse_args()
    result = {"single": single(args, args.out)}
    if not args.skip_cluster:
        result["cluster"] = cluster(args, args.out)
    (args.out / "stability.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    for part, r in result.items():
        print(f"{part}: bound {r['stability_bound_qps']:.3f} req/s, tile {r['optimal_tile_tokens']}")
        for name, c in r["capacity_qps"].items():
            print(f"  {name:<24} {c:7.3f} req/s  {r['fraction_of_bound'][name]:.3f} of the bound")


if __name__ == "__main__":
    main()
