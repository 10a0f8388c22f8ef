"""SLAI's rules on hand-built scenarios (reference section 3)."""

import pytest
from views import View

from llmsched.policies import make_policy, order
from llmsched.policies.plan import Plan
from llmsched.policies.slai import SLAI
from llmsched.workload import Request
from llmsched.workload.request import RUNNING


def decoding(i, tbt=0.5, prompt=32, priority=1):
    r = Request(i, 0.0, prompt, 100, tbt=tbt, priority=priority)
    r.prefilled = r.computed = prompt
    r.is_decoding = True
    r.generated = 1
    r.blocks = 3  # room to grow: no block needed for the next token
    r.state = RUNNING
    return r


def paused(i, prompt=2000, done=512):
    r = Request(i, 0.0, prompt, 10)
    r.prefilled = r.computed = done
    r.blocks = -(-prompt // 16)
    r.state = RUNNING
    return r


def primed(policy: SLAI, view: View, decodes, end=1.0, mean=0.05):
    """Put decodes in SLAI's queue as if they had just run in a batch ending at `end`."""
    policy.batches, policy.mean_batch = 1, mean
    policy.on_batch_done(view, Plan(decodes=list(decodes)), end - mean, end)
    return policy


def test_lst_is_last_end_plus_tbt_minus_offset_batches():
    view = View(running=[decoding(0, tbt=0.5), decoding(1, tbt=0.1)])
    p = primed(make_policy("slai-spf-fixed"), view, view.running, end=1.0, mean=0.05)
    assert p.lst[0] == pytest.approx(1.0 + 0.5 - 10 * 0.05)  # fixed offset of 10 mean batches
    assert p.lst[1] == pytest.approx(1.0 + 0.1 - 10 * 0.05)


def test_critical_decodes_first_in_deadline_order_capped_by_beta():
    view = View(running=[decoding(i, tbt=0.1 + 0.01 * i) for i in range(6)])
    p = primed(make_policy("slai-spf-fixed", limit_total_decodes=3, below_memory_limit_offset=0), view, view.running)
    view.clock = 10.0  # every decode is overdue
    view.waiting = [Request(99, 0.0, 5000, 5)]
    plan = p.schedule(view)
    assert [r.id for r in plan.decodes] == [0, 1, 2]  # earliest LST first, beta = 3
    assert plan.prefills[0][0].id == 99 and plan.prefills[0][1] == 512 - 3


def test_decodes_with_slack_yield_the_budget_to_prefills():
    view = View(running=[decoding(i) for i in range(4)])
    p = primed(make_policy("slai-spf-fixed"), view, view.running, end=1.0)
    view.clock = 1.0  # LST = 1.0 + 0.5 - 0.5 = 1.0: critical now
    view.clock = 0.99  # just before: not critical
    view.waiting = [Request(10, 0.5, 600, 5)]
    plan = p.schedule(view)
    assert plan.prefills == [(view.waiting[0], 512)]
    assert plan.decodes == []  # no budget left for relaxed decodes
    view.waiting = [Request(11, 0.5, 100, 5)]
    plan = p.schedule(view)
    assert [r.id for r in plan.decodes] == [0, 1, 2, 3]  # leftover budget goes to relaxed decodes


def test_dynamic_offset_switches_at_the_memory_limit():
    view = View(running=[decoding(0)], free_blocks=50, total_blocks=1000)  # 95% used
    p = primed(make_policy("slai-spf-dynamic"), view, view.running, end=1.0, mean=0.05)
    assert p.offset == 5 and p.lst[0] == pytest.approx(1.5 - 5 * 0.05)
    view.free_blocks = 40  # 96% used
    p.on_batch_done(view, Plan(decodes=[view.running[0]]), 1.0, 1.05)
    assert p.offset == 10


def test_waiting_order_spf_and_paying_tier_first():
    free_short = Request(1, 0.0, 100, 5, priority=1)
    paying_long = Request(2, 0.1, 3000, 5, priority=0)
    free_mid = Request(3, 0.2, 200, 5, priority=1)
    view = View(waiting=[paying_long, free_short, free_mid], token_budget=8192)
    plan = make_policy("slai-spf-dynamic").schedule(view)
    assert [r.id for r, _ in plan.prefills] == [1, 3, 2]  # shortest prompt first
    plan = make_policy("slai").schedule(view)
    assert [r.id for r, _ in plan.prefills] == [2, 1, 3]  # paying tier first, then SPF
    plan = make_policy("slai-fcfs-fixed").schedule(view)
    assert [r.id for r, _ in plan.prefills] == [2, 1, 3]  # queue order


def test_aging_lets_a_long_wait_overtake_a_short_prompt():
    key = order.aged(1.0, 100.0, by_tier=False)
    old_long = Request(1, 0.0, 1000, 5)
    new_short = Request(2, 20.0, 100, 5)  # arrived 20 s later: worth 2000 tokens of aging
    assert key(old_long) < key(new_short)
    assert order.spf(new_short) < order.spf(old_long)


def test_victim_is_the_last_paused_prefill_then_the_decode_itself():
    d = decoding(0, tbt=0.1)
    d.blocks = 2  # 32 tokens in 2 blocks: the next token needs a new block
    a, b = paused(5), paused(6)
    view = View(running=[a, b, d], free_blocks=0)
    p = primed(make_policy("slai-spf-fixed", below_memory_limit_offset=0), view, [d])
    p.paused = [a, b]
    view.clock = 5.0
    plan = p.schedule(view)
    assert [r.id for r in plan.preempt] == [6]  # the most recently paused prefill
    assert d in plan.decodes
    assert [r.id for r, _ in plan.prefills] == [5]  # the other paused prefill continues
    view2 = View(running=[d], free_blocks=0)
    p2 = primed(make_policy("slai-spf-fixed", below_memory_limit_offset=0), view2, [d])
    view2.clock = 5.0
    plan = p2.schedule(view2)
    assert plan.preempt == [d] and plan.decodes == []  # no prefill to take from: the decode goes


def test_kv_guard_runs_every_decode_above_sixty_percent_kv():
    view = View(running=[decoding(0, tbt=0.5)], free_blocks=410, total_blocks=1000)  # 59% used
    p = primed(make_policy("slai-kv-guard"), view, view.running, end=1.0, mean=0.05)
    assert p.lst[0] == pytest.approx(1.5 - 5 * 0.05)  # stretched below the guard
    view.free_blocks = 390  # 61% used
    p.on_batch_done(view, Plan(decodes=[view.running[0]]), 1.0, 1.05)
    assert p.lst[0] < 1.05  # critical in the very next batch


def test_a_decode_preempted_while_queued_is_not_scheduled_from_its_old_entry():
    # An engine may run or preempt decodes the plan did not name (vLLM's own order on a fallback step): the
    # queue then holds entries that went stale, and the one-pass "take every decode" path must skip them.
    view = View(running=[decoding(i) for i in range(3)])
    p = primed(make_policy("slai"), view, view.running, end=1.0)
    ran, preempted, queued = view.running
    p.on_batch_done(view, Plan(decodes=[ran], preempt=[preempted]), 1.0, 1.05)
    view.running, view.clock = [ran, queued], 1.1
    plan = p.schedule(view)
    assert sorted(r.id for r in plan.decodes) == [ran.id, queued.id]
    p.on_batch_done(view, plan, 1.1, 1.15)
    assert sorted(r.id for r in p.schedule(view).decodes) == [ran.id, queued.id]


def test_a_decode_never_preempts_a_prefill_continued_in_the_same_batch():
    # Found by the invariants test: a non-critical decode out of KV took the paused prefill whose chunk was
    # already in the batch, so the plan both preempted and ran it, and the engine had no block for the decode.
    d = decoding(0, tbt=0.5)
    d.blocks = 2  # 32 tokens in 2 blocks: the next token needs a new block
    a = paused(5, prompt=600)  # its last 88 tokens leave room in the budget for the decode
    view = View(running=[a, d], free_blocks=0)
    p = primed(make_policy("slai-spf-fixed", below_memory_limit_offset=0), view, [d], end=1.0)
    p.paused = [a]
    view.clock = 1.2  # before d's LST (1.5): it comes after the prefills
    plan = p.schedule(view)
    assert [r.id for r, _ in plan.prefills] == [5]
    assert plan.preempt == [d] and plan.decodes == []  # no other paused prefill: the decode goes
