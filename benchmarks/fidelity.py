"""Simulator fidelity against a real vLLM engine: the same requests and arrival times through both, the
simulator using the batch-time model profiled on this machine (`llmsched profile --backend vllm`).

Per policy, the relative error (sim - real) / real of median and p99 TTFT and ITL. The simulator runs
`vllm-v1` (our model of vLLM's scheduler) for `vllm-default`, and the same policy for plugin runs, with vLLM's
block size, KV pool, token budget and max_num_seqs. Target: |error| <= 10% (aim 5%).

    python benchmarks/fidelity.py --model models/smollm2 --profile smollm2.csv --qps 2 --num-requests 60
"""

from __future__ import annotations

import argparse
import copy
import json

from llmsched.commands.bench_engine import model_max_len, run_policy
from llmsched.integrations.vllm.engine import EngineSetup
from llmsched.metrics import summarize
from llmsched.perf.fitted import load_perf_model
from llmsched.perf.hf_config import register, spec_from_hf
from llmsched.policies import make_policy
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.workload import WorkloadConfig, build_requests

SIM_POLICY = {"vllm-default": "vllm-v1"}
KEYS = ("median_ttft_ms", "p99_ttft_ms", "median_itl_ms", "p99_itl_ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--profile", required=True, help="profile CSV or fitted JSON from `llmsched profile`")
    ap.add_argument("--policies", default="vllm-default,slai")
    ap.add_argument("--qps", type=float, default=2.0)
    ap.add_argument("--num-requests", type=int, default=60)
    ap.add_argument("--trace", default=None)
    ap.add_argument("--tiers", default="paying:0.1:tbt=0.5,free:0.9:tbt=2.0")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    spec = register(spec_from_hf(args.model))
    perf = load_perf_model(args.profile, spec.name)
    max_len = model_max_len(args.model)
    wl = WorkloadConfig(
        trace=args.trace, num_requests=args.num_requests, qps=args.qps, tiers=args.tiers, seed=args.seed
    )
    setup = EngineSetup(
        args.model, token_budget=512, max_num_seqs=128, max_model_len=max_len, tiers=args.tiers, enforce_eager=True
    )
    report = {}
    for policy in args.policies.split(","):
        real_result, real = run_policy(setup, policy, wl, max_len, None)
        requests, tiers = build_requests(wl, max_len)  # same seed: same lengths, tiers and arrival times
        assert [(r.arrival, r.prompt_len) for r in requests] == [
            (r.arrival, r.prompt_len) for r in real_result.requests
        ]
        cfg = EngineConfig(num_blocks=real_result.num_blocks, token_budget=512, max_num_seqs=128, block_size=128,
                           watermark=0.0 if policy == "vllm-default" else 0.01, max_model_len=max_len)  # fmt: skip
        sim_policy = make_policy(SIM_POLICY.get(policy, policy))
        sim = summarize(SimEngine(cfg, sim_policy, perf).run(copy.deepcopy(requests)), tiers)
        errors = {k: (sim[k] - real[k]) / real[k] if real[k] else None for k in KEYS}
        report[policy] = {"real": {k: real[k] for k in KEYS}, "sim": {k: sim[k] for k in KEYS}, "error": errors}
        print(f"{policy}: " + ", ".join(f"{k} real {real[k]:.1f} sim {sim[k]:.1f} ({errors[k]:+.1%})" for k in KEYS))
    worst = max(abs(e) for p in report.values() for e in p["error"].values() if e is not None)
    print(f"worst |error| {worst:.1%} (target <= 10%, aim 5%)")
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
