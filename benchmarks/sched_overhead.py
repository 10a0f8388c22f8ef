"""Scheduler overhead in a real vLLM engine: mean `schedule()` time per step, vLLM's default vs an llmsched
policy through the plugin, at 128 running (decoding) and 1,000 waiting requests.

Target: the plugin's mean schedule() <= 1.05x the default's. Also printed: `update_from_output()` (where the
policy's on_batch_done runs) and the two together, so no cost hides in the other half of the step. The model is
the tiny random Llama (the forward pass does not enter the figures). The engines run in this one process, one
after the other, alternating for --rounds rounds; the ratio is the median over rounds of the per-round ratio.

    python benchmarks/sched_overhead.py [--policy slai] [--steps 200] [--rounds 3] [--waiting 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from llmsched.integrations.vllm.engine import EngineSetup, make_engine, scheduler_of, vllm_environment
from llmsched.integrations.vllm.models import build_tiny_llama


def measure(model: str, policy: str, running: int, waiting: int, steps: int) -> tuple[list[float], list[float]]:
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
        times: tuple[list[float], list[float]] = ([], [])
        for name, into in (("schedule", times[0]), ("update_from_output", times[1])):
            setattr(sched, name, _timed(getattr(sched, name), into))
        for _ in range(steps):
            engine.step()
        assert len(sched.running) == running and len(sched.waiting) == waiting, (len(sched.running), len(sched.waiting))
        return times
    finally:
        engine.engine_core.shutdown()


def _timed(inner, into: list[float]):
    def timed(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        into.append(time.perf_counter() - t0)
        return out

    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="slai")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--running", type=int, default=128)
    ap.add_argument("--waiting", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    vllm_environment()
    ratios: dict[str, list[float]] = {"schedule": [], "schedule_median": [], "update": [], "both": []}
    with tempfile.TemporaryDirectory() as d:
        model = str(build_tiny_llama(f"{d}/tiny"))
        for k in range(args.rounds):
            res = {p: measure(model, p, args.running, args.waiting, args.steps) for p in ("vllm-default", args.policy)}
            for p, (sched, upd) in res.items():
                print(f"round {k + 1} {p:>14}: schedule() mean {statistics.mean(sched) * 1e3:.3f} ms "
                      f"(median {statistics.median(sched) * 1e3:.3f}), update_from_output() mean "
                      f"{statistics.mean(upd) * 1e3:.3f} ms, over {len(sched)} steps")  # fmt: skip
            (bs, bu), (os_, ou) = res["vllm-default"], res[args.policy]
            ratios["schedule"].append(statistics.mean(os_) / statistics.mean(bs))
            ratios["schedule_median"].append(statistics.median(os_) / statistics.median(bs))
            ratios["update"].append(statistics.mean(ou) / statistics.mean(bu))
            ratios["both"].append((sum(os_) + sum(ou)) / (sum(bs) + sum(bu)))
    print(f"{args.running} running, {args.waiting} waiting; ratio {args.policy}/vllm-default, median of {args.rounds} "
          f"rounds: schedule() {statistics.median(ratios['schedule']):.3f} (target <= 1.05; ratio of per-step "
          f"medians {statistics.median(ratios['schedule_median']):.3f}), update_from_output() "
          f"{statistics.median(ratios['update']):.3f}, both {statistics.median(ratios['both']):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
