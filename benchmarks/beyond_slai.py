"""Deadline-sized batching vs Sarathi-Serve and SLAI (issue "A policy beyond SLAI"), in the simulator.

For each variant: its capacity under the paper's SLO with the stable guard ("ttft_p50<=0.5,tbt_p99<=tier", which
asks for a bounded queue), then at Sarathi's capacity its median and p99 TTFT and each tier's p99 TBT, and at its own
capacity its p99 TTFT, each tier's p99 TBT and the share of arrived requests unfinished when the run stops.

Variants: sarathi (FCFS, 512 tokens), slai (the paper's), and deadline-sized with one rule at a time:
time-budget (SLAI's prefill order), srpt (512 tokens, no time budget), both (no starvation bound), aging (the
`deadline-sized` preset), wait-cap (`deadline-sized-wait-cap`).

Targets: capacity >= 1.30x Sarathi's; median TTFT >= 58% below Sarathi's at Sarathi's capacity, p99 TTFT there no
worse than Sarathi's, both tiers within their TBT; at its own capacity p99 TTFT <= 2x SLAI's at SLAI's capacity
and <= 2% unfinished.

    python benchmarks/beyond_slai.py [--trace paper|sharegpt-v3|CSV] [--variants sarathi,slai,aging] [--out F]

`--bracket LABEL=LO:HI` starts that variant's search from [LO, HI] (LO taken to pass, HI tried first) instead of
[0, 2]: fewer runs where a capacity is known roughly (another seed of the same setting); a capacity equal to LO
was not itself run. `--at QPS` runs each variant once at that rate instead: whether it meets the SLO, its TTFT,
each tier's p99 TBT and the unfinished share split into requests not yet started and requests still decoding
when the run stops.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from llmsched.metrics.stability import queue_growth
from llmsched.studies.capacity import search
from llmsched.studies.executor import Executor
from llmsched.studies.grid import run_grid
from llmsched.studies.reproduce import paper_specs
from llmsched.studies.run import run
from llmsched.studies.slo import PAPER_SLO, parse_slo
from llmsched.studies.spec import RunSpec

# label -> (policy, options, token budget; None: the policy's default)
VARIANTS: dict[str, tuple[str, dict, int | None]] = {
    "sarathi": ("sarathi", {}, 512),
    "slai": ("slai", {}, 512),
    "time-budget": ("deadline-sized", {"srpt": False, "aging": 0.0}, None),
    "srpt": ("deadline-sized", {"by_time": False, "aging": 0.0}, 512),
    "both": ("deadline-sized", {"aging": 0.0}, None),
    "aging": ("deadline-sized", {}, None),
    "wait-cap": ("deadline-sized-wait-cap", {}, None),
}


def base_spec(args: argparse.Namespace) -> RunSpec:
    """The paper setting (`llmsched reproduce`'s), on `--trace`."""
    base = paper_specs(args.trace, args.num_requests, args.time_limit)[0]
    return replace(base, workload=replace(base.workload, seed=args.seed), num_blocks=args.num_blocks)


def variant_spec(base: RunSpec, label: str, extra: dict) -> RunSpec:
    policy, options, budget = VARIANTS[label]
    options = {**options, **extra} if policy.startswith("deadline-sized") else options
    return replace(base, policy=policy, policy_options=tuple(sorted(options.items())), token_budget=budget)


def unfinished_share(summary: dict) -> float:
    """Unfinished (or rejected) among the requests that arrived before the run stopped."""
    reasons = summary.get("not_completed_reasons", {})
    arrived = summary["num_requests"] - reasons.get("not arrived before the time limit", 0)
    return (arrived - summary["completed"]) / arrived if arrived else 0.0


def tiers(summary: dict) -> dict:
    return {name: round(t["p99_itl_ms"], 1) for name, t in summary.get("tiers", {}).items() if t["p99_itl_ms"]}


def one_point(spec: RunSpec) -> dict:
    """One run (in a worker): the SLO check and where the unfinished requests stand when it stops."""
    result, s = run(spec)
    passed, reason = parse_slo(PAPER_SLO).check(s, queue_growth(result).stable)
    arrived = [r for r in result.requests if r.reason != "not arrived before the time limit"]
    started = sum(1 for r in arrived if r.token_times and r.generated < r.decode_len)
    unfinished = sum(1 for r in arrived if r.state != "finished")
    return {
        "passed": passed,
        "reason": reason,
        "median_ttft_ms": round(s["median_ttft_ms"], 1),
        "p99_ttft_ms": round(s["p99_ttft_ms"], 1),
        "p99_tbt_ms": tiers(s),
        "unfinished_share": round(unfinished / len(arrived), 4),
        "of_which_decoding": round(started / len(arrived), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=None, help="a CSV or a built-in trace (paper, sharegpt-v3); default: paper")
    ap.add_argument("--num-requests", type=int, default=16384)
    ap.add_argument("--num-blocks", type=int, default=None, help="KV pool (default: the catalog's, 14,733 blocks)")
    ap.add_argument("--time-limit", type=float, default=2100.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--option", action="append", default=[], help="KEY=VALUE for every deadline-sized variant")
    ap.add_argument("--variant", action="append", default=[], help='LABEL=POLICY:{"knob": value}, another variant')
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--bracket", action="append", default=[], help="LABEL=LO:HI, where that variant's search starts")
    ap.add_argument("--at", type=float, default=None, help="one run per variant at this QPS, no capacity search")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    labels = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in args.variant:
        label, _, rest = v.partition("=")
        policy, _, knobs = rest.partition(":")
        VARIANTS[label] = (policy, json.loads(knobs or "{}"), None)
        labels.append(label)
    extra = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    base = base_spec(args)
    t0 = time.perf_counter()
    if args.at is not None:
        specs = [variant_spec(base, label, extra).at_qps(args.at) for label in labels]
        with Executor(workers=args.workers) as ex:
            points = ex.map(one_point, [(spec,) for spec in specs])
        report({"qps": args.at, "options": extra, "variants": dict(zip(labels, points, strict=True))}, t0, args.out)
        return
    if "sarathi" not in labels:
        labels.insert(0, "sarathi")
    specs = [variant_spec(base, label, extra) for label in labels]
    with Executor(workers=args.workers) as ex:
        hints = dict(b.split("=", 1) for b in args.bracket)
        brackets = [
            tuple(float(x) for x in hints[label].split(":")) if label in hints else (0.0, 2.0) for label in labels
        ]
        searches = search(specs, parse_slo(PAPER_SLO), ex, progress=False, brackets=brackets)
        cap = {label: s.capacity for label, s in zip(labels, searches, strict=True)}
        q = cap["sarathi"] or 0.1
        at_base, _ = run_grid(specs, [q], ex, q, progress=False)
    base_sum = at_base[labels.index("sarathi")]
    out: dict = {"setting": {"trace": args.trace or "paper", "num_requests": args.num_requests,
                             "num_blocks": args.num_blocks, "time_limit": args.time_limit, "seed": args.seed,
                             "slo": str(parse_slo(PAPER_SLO)), "options": extra,
                             "brackets": dict(zip(labels, brackets, strict=True))}, "variants": {}}  # fmt: skip
    slai_p99 = None
    for label, s, at in zip(labels, searches, at_base, strict=True):
        own = s.best.summary if s.best else None
        row = {
            "capacity_qps": cap[label],
            "vs_sarathi": round(cap[label] / cap["sarathi"], 3) if cap["sarathi"] else None,
            "at_sarathi_capacity": {
                "qps": q,
                "median_ttft_ms": round(at["median_ttft_ms"], 1),
                "median_ttft_vs_sarathi": round(at["median_ttft_ms"] / base_sum["median_ttft_ms"] - 1, 3),
                "p99_ttft_ms": round(at["p99_ttft_ms"], 1),
                "p99_tbt_ms": tiers(at),
                "unfinished_share": round(unfinished_share(at), 4),
            },
            "at_own_capacity": None
            if own is None
            else {
                "median_ttft_ms": round(own["median_ttft_ms"], 1),
                "p99_ttft_ms": round(own["p99_ttft_ms"], 1),
                "p99_tbt_ms": tiers(own),
                "unfinished_share": round(unfinished_share(own), 4),
            },
            "search_points": [
                {
                    "qps": p.qps,
                    "passed": p.passed,
                    "reason": p.reason,
                    "flags": list(p.flags),
                    "stability_needs": p.stability_needs,
                }  # fmt: skip
                for p in sorted(s.points, key=lambda p: p.qps)
            ],
        }
        if label == "slai" and own is not None:
            slai_p99 = own["p99_ttft_ms"]
        out["variants"][label] = row
    if slai_p99:
        for row in out["variants"].values():
            if row["at_own_capacity"]:
                row["at_own_capacity"]["p99_ttft_vs_slai_at_its_capacity"] = round(
                    row["at_own_capacity"]["p99_ttft_ms"] / slai_p99, 2
                )
    report(out, t0, args.out)


def report(out: dict, t0: float, path: str | None) -> None:
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


if __name__ == "__main__":
    main()
