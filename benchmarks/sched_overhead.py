"""Scheduler overhead in a real vLLM engine: mean `schedule()` time per step, vLLM's default vs an llmsched
policy through the plugin, at 128 running (decoding) and 1,000 waiting requests.

Target: the plugin's mean <= 1.05x the default's. The model is the tiny random Llama (the forward pass does not
enter the figure; only `schedule()` is timed). Both engines run in this one process, one after the other.

    python benchmarks/sched_overhead.py [--policy slai] [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from llmsched.integrations.vllm.engine import EngineSetup, make_engine, scheduler_of, vllm_environment
from llmsched.integrations.vllm.models import build_tiny_llama


def measure(model: str, policy: str, running: int, waiting: int, steps: int) -> list[float]:
    from vllm import SamplingParams

    setup = EngineSetup(model, token_budget=512, max_num_seqs=running, max_model_len=2048, enforce_eager=True,
                        tiers="paying:0.1:tbt=0.1,free:0.9:tbt=0.5")  # fmt: skip
    engine = make_engine(setup, policy)
    sched = scheduler_of(engine)
    try:
        for i in range(running + waiting):
            tier = "paying" if i % 10 == 0 else "free"
            params = SamplingParams(max_tokens=1500, ignore_eos=True, detokenize=False, extra_args={"tier": tier})
            engine.add_request(
                str(i), {"prompt_token_ids": [3 + (i * 7 + k) % 900 for k in range(16 + i % 64)]}, params
            )
        while sum(r.num_output_tokens > 0 for r in sched.running) < running:
            engine.step()
        inner = sched.schedule
        times: list[float] = []

        def timed(*a, **k):
            t0 = time.perf_counter()
            out = inner(*a, **k)
            times.append(time.perf_counter() - t0)
            return out

        sched.schedule = timed
        for _ in range(steps):
            engine.step()
        assert len(sched.running) == running and len(sched.waiting) == waiting, (len(sched.running), len(sched.waiting))
        return times
    finally:
        engine.engine_core.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="slai")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--running", type=int, default=128)
    ap.add_argument("--waiting", type=int, default=1000)
    args = ap.parse_args()
    vllm_environment()
    with tempfile.TemporaryDirectory() as d:
        model = str(build_tiny_llama(f"{d}/tiny"))
        base = measure(model, "vllm-default", args.running, args.waiting, args.steps)
        ours = measure(model, args.policy, args.running, args.waiting, args.steps)
    for name, t in (("vllm-default", base), (args.policy, ours)):
        print(f"{name:>14}: mean {statistics.mean(t) * 1e3:.3f} ms, median {statistics.median(t) * 1e3:.3f} ms "
              f"per schedule() over {len(t)} steps")  # fmt: skip
    ratio = statistics.mean(ours) / statistics.mean(base)
    print(f"ratio {args.policy}/vllm-default (mean): {ratio:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
