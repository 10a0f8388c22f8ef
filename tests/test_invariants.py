"""Invariants every policy must keep, over random workloads (hypothesis)."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsched.metrics import summarize
from llmsched.policies import POLICIES, make_policy
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request
from llmsched.workload.request import FINISHED, REJECTED, UNFINISHED

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
