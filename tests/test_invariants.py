"""Invariants every policy must keep, over random workloads (hypothesis)."""

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsched.metrics import summarize
from llmsched.policies import POLICIES, make_policy, order
from llmsched.policies.plan import Plan
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request
from llmsched.workload.request import FINISHED, REJECTED, RUNNING, UNFINISHED

PERF = perf_model(RunSpec())

requests_st = st.lists(
    st.tuples(st.floats(0, 30), st.integers(1, 900), st.integers(1, 80), st.sampled_from([0.1, 0.5])),
    min_size=1,
    max_size=40,
)


def simulate(policy: str, rows, num_blocks: int, budget: int, seqs: int, limit: float | None):
    reqs = [
        Request(i, a, p, d, "paying" if t < 0.2 else "free", t, int(t > 0.2)) for i, (a, p, d, t) in enumerate(rows)
    ]
    p = make_policy(policy)
    cfg = EngineConfig(num_blocks, token_budget=budget, max_num_seqs=seqs, max_model_len=1024, time_limit=limit)
    engine = SimEngine(cfg, p, PERF)
    schedule = p.schedule

    def checked(view):  # Sarathi-Serve's can_append_slot: with no block free and none freed, no decode runs
        free = view.free_blocks
        plan = schedule(view)
        if p.sarathi_rules and not p.reserve_max_len and free == 0 and not plan.preempt:
            assert not plan.decodes, policy
        return plan

    p.schedule = checked
    return engine, engine.run(reqs)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=requests_st,
    blocks=st.integers(8, 200),
    budget=st.sampled_from([64, 512, 2048]),
    seqs=st.integers(1, 16),
    limit=st.one_of(st.none(), st.floats(1, 20)),
)
def test_every_policy_keeps_the_invariants(rows, blocks, budget, seqs, limit):
    for name in POLICIES:
        engine, result = simulate(name, rows, blocks, budget, seqs, limit)
        log = result.batches
        assert max(log.kv_blocks_used, default=0) <= blocks, name
        for r in result.requests:
            assert r.state in (FINISHED, UNFINISHED, REJECTED), name
            if r.state == FINISHED:
                assert r.generated == r.decode_len == len(r.token_times), name
                assert r.token_times[0] - r.arrival > 0
            else:
                assert r.reason, (name, r.id)
            assert np.all(np.diff(r.token_times) > 0), name
            assert r.generated <= r.decode_len
        if all(r.state != UNFINISHED for r in result.requests):
            assert engine.free_blocks == blocks, name  # KV returns to zero
        held = sum(r.blocks for r in result.requests)
        assert held == blocks - engine.free_blocks, name
        summary = summarize(result, [])
        if summary["completed"]:
            assert summary["median_ttft_ms"] <= summary["median_e2el_ms"] + 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=requests_st,
    blocks=st.integers(8, 200),
    budget=st.sampled_from([64, 512, 2048]),
    seqs=st.integers(1, 16),
    limit=st.one_of(st.none(), st.floats(1, 20)),
)
def test_batches_run_without_asking_the_policy_are_those_it_would_plan(rows, blocks, budget, seqs, limit):
    """`Policy.repeats` lets the engine run batches in bulk (`SimEngine._repeat`): every request's token times and
    every row of the batch log are those of a run that asks the policy before each batch."""

    def outcome(name: str, ask: bool) -> tuple:
        reqs = [Request(i, a, p, d, "t", t) for i, (a, p, d, t) in enumerate(rows)]
        policy = make_policy(name)
        if ask:
            policy.repeats = lambda view: False
            policy.holds = lambda view: None
        cfg = EngineConfig(blocks, token_budget=budget, max_num_seqs=seqs, max_model_len=1024, time_limit=limit)
        result = SimEngine(cfg, policy, PERF).run(reqs)
        per_request = [(r.state, r.reason, r.preemptions, r.blocks, r.token_times) for r in result.requests]
        return per_request, vars(result.batches), result.end_time

    for name in POLICIES:
        assert outcome(name, ask=False) == outcome(name, ask=True), name


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.floats(0, 5), st.integers(100, 900), st.integers(1, 200), st.floats(0.01, 0.3)),
        min_size=1,
        max_size=30,
    ),
    blocks=st.integers(60, 400),
    budget=st.sampled_from([64, 128, 256]),
    preset=st.sampled_from(["slai", "slai-spf-fixed", "slai-kv-guard"]),
)
def test_slai_bulk_batches_stop_where_a_decode_is_not_critical(rows, blocks, budget, preset):
    """SLAI runs a paused prefill's batches in bulk while every decode is critical (TBTs near the offset times the
    mean batch, so decodes turn critical and back): the same run as one that asks SLAI before each batch."""

    def outcome(ask: bool) -> tuple:
        reqs = [Request(i, a, p, d, "t", t) for i, (a, p, d, t) in enumerate(rows)]
        policy = make_policy(preset)
        if ask:
            policy.repeats = lambda view: False
            policy.holds = lambda view: None
        cfg = EngineConfig(blocks, token_budget=budget, max_num_seqs=16, max_model_len=1024)
        result = SimEngine(cfg, policy, PERF).run(reqs)
        return [(r.state, r.preemptions, r.token_times) for r in result.requests], vars(result.batches)

    assert outcome(ask=False) == outcome(ask=True)


def bulk_and_asked(preset: str, reqs: list, blocks: int, budget: int, seqs: int = 16) -> tuple:
    """A run that lets the engine run batches without asking, one that asks before each, and the policy's plans."""

    def outcome(ask: bool) -> tuple:
        policy, plans = make_policy(preset), [0]
        schedule = policy.schedule

        def counted(view):
            plans[0] += 1
            return schedule(view)

        policy.schedule = counted
        if ask:
            policy.repeats = lambda view: False
            policy.holds = lambda view: None
        cfg = EngineConfig(blocks, token_budget=budget, max_num_seqs=seqs, max_model_len=1024)
        result = SimEngine(cfg, policy, PERF).run([Request(*r) for r in reqs])
        per_request = [(r.state, r.preemptions, r.blocks, r.generated, r.token_times) for r in result.requests]
        return per_request, vars(result.batches), plans[0]

    return outcome(ask=False), outcome(ask=True)


@settings(max_examples=50, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 700), st.integers(1, 150), st.sampled_from([0.05, 0.1, 0.5])),
        min_size=1,
        max_size=16,
    ),
    blocks=st.integers(80, 600),
    budget=st.sampled_from([32, 128, 512]),
    preset=st.sampled_from(["sarathi", "slai", "slai-spf-fixed", "slai-kv-guard"]),
)
def test_requests_finish_and_complete_their_prompts_in_bulk_as_batch_by_batch(rows, blocks, budget, preset):
    """`bulk_finishes`: with nothing waiting, batches in which decodes finish and prompts complete run without asking
    the policy; the requests and the batch log are those of a run that asks before each batch."""
    reqs = [(i, float(a), p, d, "t", t) for i, (a, p, d, t) in enumerate(rows)]
    bulk, asked = bulk_and_asked(preset, reqs, blocks, budget)
    assert bulk[:2] == asked[:2]


@pytest.mark.parametrize("preset", ["sarathi", "slai"])
def test_a_batch_of_requests_runs_to_the_end_without_asking_again(preset):
    """Admitted together and nothing waiting: after the batch that admits them, the prompts complete and the decodes
    finish one after another without the policy being asked again."""
    # A TBT below SLAI's offset times the mean batch: each decode is critical at each batch (`SLAI.repeats`).
    reqs = [(i, 0.0, 100 + 30 * i, d, "t", 0.05) for i, d in enumerate([5, 12, 12, 40])]
    bulk, asked = bulk_and_asked(preset, reqs, blocks=400, budget=512)  # all admitted in the first batch
    assert bulk[:2] == asked[:2]
    assert bulk[2] == 1 < asked[2] == len(asked[1]["start"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.floats(0, 4), st.integers(20, 1000), st.integers(1, 60), st.sampled_from([0.05, 0.5, 5.0])),
        min_size=1,
        max_size=20,
    ),
    budget=st.sampled_from([16, 64, 128]),
    preset=st.sampled_from(["slai", "slai-fcfs-fixed", "slai-kv-guard"]),
    caching=st.booleans(),
)
def test_slai_chunk_only_batches_run_as_batch_by_batch(rows, budget, preset, caching):
    """`SLAI.holds`: while no decode is critical, paused prefills take whole-budget chunks in turn without SLAI being
    asked (long prompts, loose TBTs); the requests, the batch log and the cache's books are those of a run that asks
    before each batch."""
    # Prompts of three conversations, 32-token blocks: some share their first blocks.
    reqs = [
        Request(i, a, p, d, "t", t, prefix_ids=tuple(100 * (i % 3) + j for j in range(-(-p // 32))), prefix_block=32)
        for i, (a, p, d, t) in enumerate(rows)
    ]
    bulk = chunk_only_outcome(preset, reqs, budget, caching, ask=False)
    assert bulk[:-1] == chunk_only_outcome(preset, reqs, budget, caching, ask=True)[:-1]
    # Against runs that hold nothing back, the plans SLAI still makes are the same, decodes in the same order (what
    # a batch releases first matters to the cache); runs that ask before each batch may order them otherwise.
    held = chunk_only_outcome(preset, reqs, budget, caching, ask=False, hold=False)
    assert bulk[:-1] == held[:-1] and bulk[-1].items() <= held[-1].items()


def chunk_only_outcome(preset: str, reqs: list, budget: int, caching: bool, ask: bool, hold: bool = True) -> tuple:
    """A run's requests, batch log, cache books and SLAI's state, and the plans SLAI made, by their batch's start."""
    cfg = EngineConfig(
        400, token_budget=budget, max_num_seqs=8, max_model_len=1024, block_size=8, enable_prefix_caching=caching
    )
    policy, plans = make_policy(preset), {}
    schedule = policy.schedule

    def recorded(view):
        plan = schedule(view)
        plans[view.clock] = ([r.id for r in plan.decodes], [(r.id, k) for r, k in plan.prefills])
        return plan

    policy.schedule = recorded
    if ask:
        policy.repeats = lambda view: False
    if ask or not hold:
        policy.holds = lambda view: None
    engine = SimEngine(cfg, policy, PERF)
    result = engine.run([copy.copy(r) for r in reqs])
    per_request = [(r.state, r.preemptions, r.blocks, r.cached_tokens, r.token_times) for r in result.requests]
    books = (engine.kv.evicted, engine.kv.cached_free, engine.kv.free) if caching else ()
    return per_request, vars(result.batches), books, policy.paused, dict(policy.lst), plans


def test_slai_holds_a_loose_decode_while_a_long_prompt_takes_whole_chunks():
    """A decode far from its deadline waits while a long prompt takes the whole budget: SLAI plans those batches
    once, not one by one, and the run is the batch-by-batch one."""
    reqs = [Request(0, 0.0, 20, 60, "t", 5.0), Request(1, 0.05, 1000, 5, "t", 5.0)]
    bulk = chunk_only_outcome("slai", reqs, 64, False, ask=False)
    asked = chunk_only_outcome("slai", reqs, 64, False, ask=True)
    assert bulk[:-1] == asked[:-1]
    assert 0 in bulk[1]["decodes"] and len(bulk[-1]) < len(asked[-1]) // 2


def test_requests_that_can_never_fit_are_rejected_not_dropped():
    _, result = simulate("sarathi", [(0, 900, 5, 0.5), (0, 10, 5, 0.5)], num_blocks=20, budget=512, seqs=4, limit=None)
    states = {r.id: (r.state, r.reason) for r in result.requests}
    assert states[0][0] == REJECTED and "KV blocks" in states[0][1]
    assert states[1][0] == FINISHED


def test_same_seed_same_bytes(write_trace):
    path = write_trace([(50 + 7 * i, 3 + i % 11) for i in range(60)])
    for policy in ("sarathi", "slai", "vllm"):
        spec = RunSpec(policy=policy, workload=RunSpec().workload.__class__(trace=path, qps=4, seed=3))
        a = json.dumps(run(spec)[1], sort_keys=True)
        b = json.dumps(run(spec)[1], sort_keys=True)
        assert a == b


class View:
    """A hand-built engine view: the state a policy plans from."""

    def __init__(self, running, waiting, free_blocks, clock=10.0):
        self.clock, self.running, self.waiting, self.free_blocks = clock, running, waiting, free_blocks
        self.total_blocks, self.block_size, self.watermark_blocks = 200, 16, 0
        self.token_budget, self.max_num_seqs, self.max_model_len = 512, 8, 1024
        self.enable_prefix_caching = False

    def waiting_by(self, key):
        return sorted(self.waiting, key=lambda r: (*key(r), r.id))


def decoding(rid: int, prompt: int, blocks: int) -> Request:
    r = Request(rid, 0.0, prompt, 50, tbt=0.1)
    r.prefilled = r.computed = prompt
    r.generated, r.blocks, r.is_decoding, r.state = 1, blocks, True, RUNNING
    return r


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_decode_needs_a_free_block_under_sarathi_rules(name):
    """A decode whose last block has room, with no block free: Sarathi-Serve's engines (can_append_slot) preempt it;
    vLLM v1 runs it; Orca and FasterTransformer hold max_model_len's blocks and never check."""
    p = make_policy(name)
    r = decoding(0, 20, 64 if p.reserve_max_len else 2)  # 20 tokens in 2 blocks of 16: room for 12 more
    view = View([r], [], free_blocks=0)
    p.on_batch_done(view, Plan(prefills=[(r, 20)]), 0.0, 0.05)  # SLAI learns of the decode from its prefill
    plan = p.schedule(view)
    if p.sarathi_rules and not p.reserve_max_len:
        assert plan.decodes == [] and plan.preempt == [r]
    else:
        assert plan.decodes == [r] and plan.preempt == []


SPF_POLICIES = ["sarathi-spf", "slai", "slai-spf-fixed", "slai-spf-dynamic", "slai-kv-guard"]


@pytest.mark.parametrize("name", SPF_POLICIES)
def test_spf_counts_a_recomputed_requests_generated_tokens(name):
    """Preempted after generating 200 tokens, a 100-token prompt prefills 300 tokens: Sarathi-Serve's SPF
    (reset_for_recompute) ranks it after a 250-token prompt; by the submitted prompt it would come first."""
    p = make_policy(name)
    assert p.sarathi_rules
    recomputed = Request(0, 0.0, 100, 400, tbt=0.5, priority=1)
    recomputed.generated, recomputed.num_prompt, recomputed.preemptions = 200, 300, 1
    fresh = Request(1, 1.0, 250, 10, tbt=0.5, priority=1)
    plan = p.schedule(View([], [recomputed, fresh], free_blocks=200))
    assert [r.id for r, _ in plan.prefills] == [1, 0]
    # without the rule (vLLM's request keeps its prompt length) the same queue orders the other way
    assert sorted([recomputed, fresh], key=order.spf_key(False))[0] is recomputed
    assert sorted([recomputed, fresh], key=order.tier_spf_key(False))[0] is recomputed
