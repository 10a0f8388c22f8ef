"""The engine and cluster loops for arrivals that follow completions (workload.source.Workload)."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsched.perf import analytic_model, get_gpu, get_model
from llmsched.policies import make_policy
from llmsched.routers import ROUTERS, make_router
from llmsched.sim.cluster import Cluster
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.workload import Request
from llmsched.workload.request import FINISHED

PERF = analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"))


class Fixed:
    """A closed loop that causes no arrivals: it must run exactly as the open loop over the same list."""

    def __init__(self, requests):
        self.requests = requests

    def initial(self):
        return list(self.requests)

    def on_done(self, r, t):
        return []


class Chains:
    """`chains` users, each sending `turns` requests: the next `think` seconds after the previous one ends."""

    def __init__(self, chains, turns, think, prompt=300, decode=20):
        self.turns, self.think, self.prompt, self.decode = turns, think, prompt, decode
        self.starts = [0.01 * c for c in range(chains)]
        self.ended: dict[int, float] = {}

    def make(self, chain, turn, t):
        return Request(chain * self.turns + turn, t, self.prompt + 50 * turn, self.decode)

    def initial(self):
        return [self.make(c, 0, t) for c, t in enumerate(self.starts)]

    def on_done(self, r, t):
        self.ended[r.id] = t
        chain, turn = divmod(r.id, self.turns)
        return [self.make(chain, turn + 1, t + self.think)] if turn + 1 < self.turns and r.state == FINISHED else []


def engine(policy="sarathi", blocks=2000):
    return SimEngine(EngineConfig(num_blocks=blocks), make_policy(policy), PERF)


def random_requests(n, seed=1):
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(0.05, n))
    lens = zip(rng.integers(20, 3000, n), rng.integers(1, 200, n), strict=True)
    return [Request(i, float(t), int(p), int(d)) for i, (t, (p, d)) in enumerate(zip(times, lens, strict=True))]


def outcome(result):
    return [(r.id, r.state, r.token_times, r.preemptions) for r in result.requests], result.batches.duration


@pytest.mark.parametrize("policy", ["sarathi", "slai", "vllm", "orca"])
def test_a_closed_loop_without_feedback_is_the_open_loop(policy):
    reqs = random_requests(200)
    open_loop = engine(policy, 1500).run(copy.deepcopy(reqs))
    closed = engine(policy, 1500).run(Fixed(copy.deepcopy(reqs)))
    assert outcome(open_loop) == outcome(closed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(router=st.sampled_from(sorted(ROUTERS)), replicas=st.integers(1, 3), seed=st.integers(0, 100))
def test_a_cluster_closed_loop_without_feedback_is_the_open_loop(router, replicas, seed):
    reqs = random_requests(60, seed)

    def cluster():
        engines = [engine("sarathi", 400) for _ in range(replicas)]
        return Cluster(engines, make_router(router, [1000.0] * replicas, seed=3))

    assert outcome(cluster().run(copy.deepcopy(reqs))) == outcome(cluster().run(Fixed(copy.deepcopy(reqs))))


def test_each_turn_arrives_its_think_time_after_the_previous_one_ends():
    wl = Chains(chains=5, turns=4, think=0.7)
    result = engine().run(wl)
    assert len(result.requests) == 20 and all(r.state == FINISHED for r in result.requests)
    by_id = {r.id: r for r in result.requests}
    for r in result.requests:
        assert wl.ended[r.id] == r.token_times[-1]
        if r.id % 4:
            assert r.arrival == pytest.approx(wl.ended[r.id - 1] + 0.7)
            assert r.token_times[0] > by_id[r.id - 1].token_times[-1]
    assert [r.arrival for r in result.requests] == sorted(r.arrival for r in result.requests)


def test_a_turn_due_at_a_batch_end_joins_the_next_batch():
    # No think time: the next turn arrives at the instant its predecessor ends and must be in the batch that
    # starts then (the open loop's rule: arrivals up to the clock join), not one later.
    wl = Chains(chains=1, turns=3, think=0.0)
    result = engine().run(wl)
    starts = result.batches.start
    for r in result.requests[1:]:
        assert r.arrival in starts
        assert r.token_times[0] == pytest.approx(starts[starts.index(r.arrival) + 1])


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_cluster_closed_loop_serves_every_turn_in_causal_order(router):
    wl = Chains(chains=12, turns=5, think=0.3)
    engines = [engine("sarathi", 600) for _ in range(3)]
    result = Cluster(engines, make_router(router, [1000.0] * 3, seed=1)).run(wl)
    assert len(result.requests) == 60 and all(r.state == FINISHED for r in result.requests)
    assert sum(len(p.requests) for p in result.replicas) == 60
    for part in result.replicas:  # no batch on any replica started after a request routed there arrived, without it
        for r in part.requests:
            assert r.token_times[0] > r.arrival
    for r in result.requests:
        if r.id % 5:
            assert r.arrival == pytest.approx(wl.ended[r.id - 1] + 0.3)


def test_one_replica_cluster_closed_loop_is_the_single_engine():
    single = engine("slai", 500).run(Chains(chains=8, turns=4, think=0.2))
    both = Cluster([engine("slai", 500)], make_router("round-robin", [1.0])).run(Chains(chains=8, turns=4, think=0.2))
    assert outcome(single) == outcome(both)
