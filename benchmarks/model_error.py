"""How wrong may the batch-time model be before deadline-sized batching breaks a TBT tier? (issue "A policy beyond
SLAI", item 2). The engine runs the paper setting's model; the policy plans with a model that is optimistic by e:
- uniform: every batch takes (1 + e) x what the policy predicts;
- decodes: each decode's marginal cost (its token, attention and KV reads) is (1 + e) x the prediction, prefill
  chunks cost what is predicted.
For each `safety` and each error, one run at `--qps` prints each tier's p99 TBT and the largest error with both
tiers within their TBT.

Target: the tiers hold with the model 8% optimistic (uniform) at the default safety.

    python benchmarks/model_error.py [--qps 2.0] [--safety 0.85,0.9,0.95] [--uniform E,..] [--decodes E,..] [--out F]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from llmsched.perf.perturbed import Perturbed
from llmsched.studies.executor import Executor
from llmsched.studies.grid import run_point
from llmsched.studies.reproduce import paper_specs
from llmsched.studies.spec import perf_model

UNIFORM = "0,0.04,0.08,0.12,0.16,0.2"
DECODES = "0.25,0.5,1.0"  # no error at all is the uniform list's 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default=None)
    ap.add_argument("--qps", type=float, default=2.0)
    ap.add_argument("--safety", default="0.85,0.9,0.95")
    ap.add_argument("--policy", default="deadline-sized")
    ap.add_argument("--uniform", default=UNIFORM, help="uniform errors e, comma-separated")
    ap.add_argument("--decodes", default=DECODES, help="errors e of the decodes' marginal cost, comma-separated")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    base = replace(paper_specs(args.trace)[0], policy=args.policy, token_budget=None)
    truth = perf_model(base)
    jobs, keys = [], []
    for safety in (float(s) for s in args.safety.split(",")):
        for kind, errors in (("uniform", args.uniform), ("decodes", args.decodes)):
            for e in (float(x) for x in errors.split(",")):
                if kind == "uniform":
                    model = Perturbed(truth, scale=1 / (1 + e))
                else:
                    model = Perturbed(truth, decode_scale=1 / (1 + e))
                jobs.append(replace(base, policy_options=(("perf", model), ("safety", safety))))
                keys.append((safety, kind, e))
    t0 = time.perf_counter()
    with Executor(workers=args.workers) as ex:
        summaries = [s for s, _ in ex.map(run_point, [(spec.at_qps(args.qps), False) for spec in jobs])]
    out: dict = {"qps": args.qps, "policy": args.policy, "runs": []}
    holds: dict[tuple[float, str], float] = {}
    for (safety, kind, e), s in zip(keys, summaries, strict=True):
        tiers = {n: (round(t["p99_itl_ms"], 1), t["tbt_slo_ms"]) for n, t in s["tiers"].items()}
        ok = all(v <= slo for v, slo in tiers.values())
        out["runs"].append({"safety": safety, "error": kind, "e": e, "p99_tbt_ms": tiers, "tiers_hold": ok,
                            "median_ttft_ms": round(s["median_ttft_ms"], 1)})  # fmt: skip
        smaller = [r for r in out["runs"] if r["safety"] == safety and (r["error"] == kind or r["e"] == 0)]
        if ok and all(r["tiers_hold"] for r in smaller):
            holds[(safety, kind)] = e
    out["largest_error_tiers_hold"] = {f"safety {s:g}, {k}": e for (s, k), e in holds.items()}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
