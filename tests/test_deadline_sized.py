"""Deadline-sized batching: batches within their time budget, SRPT order, the starvation bounds, the TBT tiers."""

from dataclasses import dataclass

import numpy as np
import pytest
import views
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmsched.perf.base import BatchShape
from llmsched.perf.perturbed import Perturbed
from llmsched.policies import make_policy, needs_perf
from llmsched.policies.deadline_sized import DeadlineSized
from llmsched.policies.plan import Plan
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.studies.run import replica_engine
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request
from llmsched.workload.request import RUNNING

PERF = perf_model(RunSpec())


def predicted(plan: Plan, perf=PERF) -> float:
    return perf.batch_time(
        BatchShape.of([(k, r.computed) for r, k in plan.prefills], [r.computed for r in plan.decodes])
    )


class Checked(DeadlineSized):
    """Checks every plan against the budget it was planned under (the engine's model is the policy's: exact)."""

    def schedule(self, view):
        plan = super().schedule(view)
        if plan.prefills or plan.decodes:
            t = predicted(plan)
            # Critical decodes run even when they alone exceed the budget; then nothing else joins them.
            assert t <= max(self.budget, self.critical_time) + 1e-12, (t, self.budget, self.critical_time)
            if t > self.budget + 1e-12:
                assert not plan.prefills and t == pytest.approx(self.critical_time)
            if plan.prefills:
                assert t <= self.cfg.cap_s + 1e-12
            self.checked += 1
        return plan


def requests(rows):
    return [
        Request(i, a, p, d, "paying" if t < 0.2 else "free", t, int(t > 0.2)) for i, (a, p, d, t) in enumerate(rows)
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.floats(0, 20), st.integers(1, 3000), st.integers(1, 60), st.sampled_from([0.05, 0.1, 0.5])),
        min_size=1,
        max_size=50,
    ),
    blocks=st.integers(200, 2000),
    cap=st.sampled_from([0.03, 0.1, 0.25]),
    safety=st.sampled_from([0.5, 0.9, 1.0]),
    preset=st.sampled_from(["deadline-sized", "deadline-sized-wait-cap"]),
)
def test_no_batch_exceeds_its_time_budget_with_the_exact_model(rows, blocks, cap, safety, preset):
    policy = Checked(preset, perf=PERF, cap_s=cap, safety=safety)
    policy.checked = 0
    cfg = EngineConfig(blocks, token_budget=4096, max_num_seqs=64, max_model_len=4096)
    SimEngine(cfg, policy, PERF).run(requests(rows))
    assert policy.checked > 0


def tbt_gaps(result, tier):
    return [g for r in result.requests if r.tier == tier for g in np.diff(r.token_times)]


def stream(long_prompts: int = 20):
    """Four paying decodes (TBT 0.1 s) under a burst of 3,000-token prompts from the free tier."""
    rows = [(0.0, 20, 400, 0.1) for _ in range(4)] + [(0.5 + 0.1 * i, 3000, 20, 0.5) for i in range(long_prompts)]
    return requests(rows)


def test_paying_decodes_keep_their_tbt_under_long_prompts():
    cfg = EngineConfig(20000, token_budget=8192, max_num_seqs=64, max_model_len=4096)
    result = SimEngine(cfg, make_policy("deadline-sized"), PERF).run(stream())
    assert max(tbt_gaps(result, "paying")) <= 0.1
    # The same batches by tokens alone break the tier: the time budget is what holds it.
    result = SimEngine(cfg, make_policy("deadline-sized", by_time=False), PERF).run(stream())
    assert max(tbt_gaps(result, "paying")) > 0.1


def test_tiers_hold_when_the_model_is_8_percent_optimistic():
    cfg = EngineConfig(20000, token_budget=8192, max_num_seqs=64, max_model_len=4096)
    engine_perf = Perturbed(PERF, scale=1.08)  # the engine is 8% slower than the policy predicts
    result = SimEngine(cfg, make_policy("deadline-sized", perf=PERF), engine_perf).run(stream())
    assert max(tbt_gaps(result, "paying")) <= 0.1


@dataclass
class View(views.View):
    clock: float = 10.0
    free_blocks: int = 10000
    total_blocks: int = 10000
    token_budget: int = 1000


def paused(i, prompt, done, priority=1, arrival=0.0):
    r = Request(i, arrival, prompt, 10, priority=priority)
    r.prefilled = r.computed = done
    r.blocks = -(-prompt // 16)
    r.state = RUNNING
    return r


def prime_paused(policy, view, reqs):
    """Make `reqs` SLAI-style paused prefills of `policy` (they ran a chunk in the last batch)."""
    policy.on_batch_done(view, Plan(prefills=[(r, 1) for r in reqs]), 9.9, 10.0)


def test_paused_and_new_prefills_in_one_order_shortest_remaining_first_paying_first():
    p = make_policy("deadline-sized", aging=0.0, cap_s=10.0)
    a, b = paused(0, 2000, 500), paused(1, 400, 100)  # 1,500 and 300 tokens left
    view = View(waiting=[Request(2, 1.0, 500, 5, priority=1), Request(3, 2.0, 100, 5, priority=1),
                         Request(4, 3.0, 800, 5, priority=0)])  # fmt: skip
    prime_paused(p, view, [a, b])
    plan = p.schedule(view)
    # paying 800 first, then 100 (new), 300 (paused) and 500 (new) by remaining tokens; the token budget (1,000)
    # cuts the 300.
    assert [(r.id, k) for r, k in plan.prefills] == [(4, 800), (3, 100), (1, 100)]


def test_time_budget_cuts_the_chunk_to_the_budget():
    p = make_policy("deadline-sized", aging=0.0, cap_s=0.05)
    view = View(waiting=[Request(0, 1.0, 5000, 5)], token_budget=8192)
    plan = p.schedule(view)
    (r, k), = plan.prefills  # fmt: skip
    assert 0 < k < 5000
    assert predicted(plan) <= 0.05 < PERF.batch_time(BatchShape.of([(k + 1, 0)], []))


def test_aging_puts_an_old_long_prompt_before_new_short_ones():
    p = make_policy("deadline-sized", aging=100.0, cap_s=10.0)
    old_long = Request(0, 0.0, 1000, 5)  # 1,000 + 100 x 0 = 1,000
    new_short = Request(1, 9.5, 200, 5)  # 200 + 100 x 9.5 = 1,150
    plan = p.schedule(View(waiting=[old_long, new_short], token_budget=1000))
    assert [r.id for r, _ in plan.prefills] == [0]


def test_wait_cap_puts_a_request_seen_waiting_that_long_first():
    short = Request(1, 5.5, 50, 5)
    long = Request(0, 0.0, 1000, 5)
    p = make_policy("deadline-sized-wait-cap", wait_cap_s=5.0, cap_s=10.0)
    p.schedule(View(clock=0.0, waiting=[long], free_blocks=0))  # seen at 0, not admitted (no KV)
    plan = p.schedule(View(clock=4.0, waiting=[long, short], token_budget=100))
    assert [r.id for r, _ in plan.prefills] == [1, 0]  # not yet overdue: the shorter first
    plan = p.schedule(View(clock=6.0, waiting=[long, short], token_budget=100))
    assert [r.id for r, _ in plan.prefills] == [0]  # overdue: before the shorter one


SHORT = 400


def overload(long_prompt: int = 4000, seconds: float = 40.0):
    """One long prompt at 5 s under a stream of short prompts (20k tokens/s) faster than the engine can prefill
    them (about 15k tokens/s): a backlog of short prompts from the start."""
    rows = [(0.02 * i, SHORT, 1, 0.5) for i in range(int(seconds / 0.02))] + [(5.0, long_prompt, 1, 0.5)]
    return requests(rows)


def ttft_of_long(policy, long_prompt=4000):
    cfg = EngineConfig(100000, token_budget=8192, max_num_seqs=128, max_model_len=8192)
    reqs = overload(long_prompt)
    SimEngine(cfg, policy, PERF).run(reqs)
    long = reqs[-1]
    return long.token_times[0] - long.arrival, reqs


def test_a_long_prompt_starves_under_plain_srpt():
    ttft, _ = ttft_of_long(make_policy("deadline-sized", aging=0.0))
    assert ttft > 30.0


def test_wait_cap_bounds_the_wait_of_a_long_prompt():
    ttft, _ = ttft_of_long(make_policy("deadline-sized-wait-cap", wait_cap_s=3.0))
    assert ttft <= 3.0 + 2.0  # the cap, then the prompts ahead of it (older) and its own chunks


def test_aging_bounds_which_prompts_overtake_a_long_one():
    rate = 1000.0
    ttft, reqs = ttft_of_long(make_policy("deadline-sized", aging=rate))
    long = reqs[-1]
    assert ttft < 30.0
    # A short prompt arriving (4000 - 400) / rate seconds after the long one no longer goes first.
    horizon = long.arrival + (long.prompt_len - SHORT) / rate
    later = [r for r in reqs[:-1] if r.arrival > horizon + 0.02 and r.token_times]
    assert later and all(r.token_times[0] >= long.token_times[0] for r in later)


def test_every_preset_builds_without_arguments_and_engines_pass_their_model():
    for name in ("deadline-sized", "deadline-sized-wait-cap"):
        assert needs_perf(name) and make_policy(name).perf is not None
    assert not needs_perf("slai")
    engine = replica_engine(RunSpec(policy="deadline-sized"))
    assert engine.policy.perf is engine.perf
    engine = replica_engine(RunSpec(policy="deadline-sized", batch_overhead_s=0.002))
    shape = BatchShape.of([(100, 0)], [50])
    assert engine.policy.perf.batch_time(shape) == pytest.approx(engine.perf.batch_time(shape) + 0.002)


def test_bad_knobs_are_refused():
    from llmsched.errors import UserError

    for knobs in ({"safety": 1.5}, {"cap_s": 0.0}, {"aging": -1.0}):
        with pytest.raises(UserError):
            make_policy("deadline-sized", **knobs)


def test_perturbed_model_scales_the_decodes_marginal_cost():
    shape = BatchShape.of([(256, 0)], [500] * 20)
    alone = PERF.batch_time(shape._replace(decodes=0, decode_context=0))
    t = PERF.batch_time(shape)
    assert Perturbed(PERF, decode_scale=1.5).batch_time(shape) == pytest.approx(t + 0.5 * (t - alone))
    assert Perturbed(PERF, scale=1.1, added_s=0.001).batch_time(shape) == pytest.approx(1.1 * t + 0.001)
    assert Perturbed(PERF, scale=2.0).batch_time(BatchShape()) == 0.0
