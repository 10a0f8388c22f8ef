import numpy as np
import pytest

from llmsched.metrics.stability import queue_growth
from llmsched.perf import analytic_model, get_gpu, get_model
from llmsched.policies import POLICIES, make_policy
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.studies.bounds import replica_tile, spec_bound
from llmsched.studies.run import replica_engine, run
from llmsched.studies.spec import RunSpec
from llmsched.workload import Request, WorkloadConfig

PERF = analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"))


@pytest.fixture(scope="module")
def small_trace(random_trace):
    """Short requests and (in the specs below) a small KV pool, so runs are quick and memory binds."""
    return random_trace(2000)


def small_spec(trace: str, policy: str = "rad", **kw) -> RunSpec:
    return RunSpec(policy=policy, workload=WorkloadConfig(trace=trace, num_requests=1500), num_blocks=600, **kw)


def engine(tile: int, requests: list[Request], num_blocks: int = 4000) -> SimEngine:
    e = SimEngine(
        EngineConfig(num_blocks, token_budget=1 << 30, max_num_seqs=1024), make_policy("rad", tile=tile), PERF
    )
    e.run(requests)
    return e


def test_fills_the_tile_exactly_while_work_is_queued():
    reqs = [Request(i, 0.0, 300 + 37 * i, 20) for i in range(30)]
    log = engine(256, reqs).log
    tokens = np.add(log.prefill_tokens, log.decodes)
    assert tokens.max() == 256
    queued_prefill = sum(r.prompt_len for r in reqs)
    # every batch is a full tile until the last prompt token is scheduled
    full = np.cumsum(log.prefill_tokens) < queued_prefill
    assert (tokens[full] == 256).all()


def test_work_conserving_below_the_tile():
    reqs = [Request(0, 0.0, 100, 3), Request(1, 0.0, 50, 3)]
    log = engine(512, reqs).log
    assert (log.prefill_tokens[0], log.decodes[0]) == (150, 0)  # all queued work, in one batch
    assert list(log.decodes[1:]) == [2, 2]  # then both decodes, every batch


def test_decodes_first_then_prefill_fills_the_rest():
    reqs = [Request(i, 0.0, 64, 50) for i in range(8)] + [Request(100, 0.001, 5000, 2)]
    log = engine(128, reqs).log
    # once the 8 short requests decode, each batch holds 8 decodes and 120 tokens of the long prompt
    mixed = [(p, d) for p, d in zip(log.prefill_tokens, log.decodes, strict=True) if d == 8 and p > 0]
    assert mixed and all(p == 120 for p, _ in mixed[:-1])


def test_experiment_gives_rad_the_theory_tile(small_trace):
    spec = small_spec(small_trace)
    assert replica_engine(spec).policy.tile == replica_tile(spec).tokens
    assert replica_engine(small_spec(small_trace, token_budget=200)).policy.tile == 200


def test_rad_reaches_the_bound_nothing_exceeds_it(small_trace):
    """The stability bound: RAD is stable below it (this small system, about 37 requests in flight, reaches
    about 0.85 of it); no policy is stable 15% above it."""
    bound = spec_bound(small_spec(small_trace)).qps
    result, summary = run(small_spec(small_trace).at_qps(0.8 * bound))
    assert queue_growth(result).stable and summary["completed"] == 1500
    for name in POLICIES:
        result, _ = run(small_spec(small_trace, name).at_qps(1.15 * bound))
        assert not queue_growth(result).stable, name


def test_rad_mean_batch_near_tile_when_saturated(small_trace):
    spec = small_spec(small_trace)
    tile = replica_tile(spec)
    result, _ = run(spec.at_qps(2 * spec_bound(spec).qps))
    b = result.batches
    tokens = np.add(b.prefill_tokens, b.decodes)
    assert tokens.max() <= tile.tokens
    # under overload the batches are full tiles, and their time is the theory's t(b*) within 10%
    assert np.median(tokens) >= 0.95 * tile.tokens
    assert np.median(b.duration) == pytest.approx(tile.batch_time_s, rel=0.1)
