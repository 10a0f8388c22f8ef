"""vLLM 0.32's async scheduling scenarios, run against vLLM's `AsyncScheduler` and the plugin's
`AsyncPolicyScheduler` (SLAI, Sarathi-Serve): steps scheduled while earlier ones are in flight, output
placeholders, max_tokens reached in flight, prefix cache hits within one step and across turns, aborts, and
block frees deferred until the steps that may still write the blocks are processed.

Each test restates one of vLLM's scheduler unit tests (Apache-2.0, copyright the vLLM project contributors;
tests/v1/core/test_async_scheduler.py and tests/v1/core/test_deferred_block_free.py, named in its docstring) in
this repository's own code, for vLLM 0.32.0, with the scheduler class as a parameter. vLLM turns async
scheduling off on CPUs, so the steps are driven by hand here, as vLLM's tests drive them.

Needs the `vllm` extra; skipped without it.
"""

from __future__ import annotations

import time
from collections import deque

import pytest

pytest.importorskip("vllm")

from vllm.v1.request import RequestStatus  # noqa: E402
from vllm_harness import ASYNC, make_requests, make_scheduler, plugin_clean, runner_output, write_model_config  # noqa: E402

PROMPT = 33  # three blocks of 16
STOP = 42


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model_config(tmp_path_factory.mktemp("model"))


def _params(kinds):
    return pytest.mark.parametrize("kind", kinds, ids=[k.name for k in kinds])


def _no_mismatch(sched):
    if sched.__class__.__name__.startswith("Async") and hasattr(sched, "stats"):
        assert sched.stats["mismatched_steps"] == 0, sched.stats
        assert sched.stats["fallback_steps"] == 0, sched.stats


def _step(sched):
    """Schedule a step; with it, the requests given a partial prefill chunk (the runner samples nothing for them)."""
    out = sched.schedule()
    return out, {rid for rid in out.num_scheduled_tokens if sched.requests[rid].is_prefill_chunk}


def _drain(sched, outs: deque, on_step=None):
    """vLLM's batch queue at depth 2: process the oldest step's output, then schedule the next; `outs` holds
    (SchedulerOutput, partial chunks) pairs or bare outputs (no partial chunk)."""
    total = 0
    while outs:
        if on_step is not None:
            on_step()
        item = outs.popleft()
        out, partial = item if isinstance(item, tuple) else (item, set())
        total += out.total_num_scheduled_tokens
        tokens = {r: ([] if r in partial else [i]) for i, r in enumerate(out.num_scheduled_tokens)}
        sched.update_from_output(out, runner_output(out, sampled=tokens))
        out, partial = _step(sched)
        if out.num_scheduled_tokens:
            outs.append((out, partial))
    return total


# --- tests/v1/core/test_async_scheduler.py ---------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 5])
@_params(ASYNC)
def test_stop_by_max_tokens(kind, model, max_tokens):
    """test_stop_by_max_tokens: two requests scheduled a step apart finish with exactly max_tokens, and no step
    is scheduled beyond them (vLLM skips a decode whose steps in flight already reach max_tokens; the plugin
    leaves such decodes out of its plan instead of counting a mismatch)."""
    sched = make_scheduler(kind, model)
    a, b = make_requests(2, max_tokens=max_tokens)
    sched.add_request(a)
    outs = deque([sched.schedule()])
    sched.add_request(b)
    outs.append(sched.schedule())
    total = _drain(sched, outs)
    assert sched.get_num_unfinished_requests() == 0
    assert a.num_output_tokens == b.num_output_tokens == max_tokens
    assert total == a.num_prompt_tokens + b.num_prompt_tokens + 2 * (max_tokens - 1)
    _no_mismatch(sched)
    plugin_clean(sched)


@_params(ASYNC)
def test_abort(kind, model):
    """test_abort (and test_preempt, the same scenario upstream): ten requests, two steps in flight, one request
    aborted before each output is processed: each has generated as many tokens as aborts came before it."""
    sched = make_scheduler(kind, model)
    requests = make_requests(10, max_tokens=20)
    for r in requests:
        sched.add_request(r)
    outs = deque([sched.schedule(), sched.schedule()])
    order = [0, 8, 3, 1, 6, 4, 2, 5, 7, 9]
    pending = list(order)

    def abort():
        if pending:
            sched.finish_requests(requests[pending.pop(0)].request_id, RequestStatus.FINISHED_ABORTED)

    _drain(sched, outs, abort)
    for i, r in enumerate(requests):
        assert r.status == RequestStatus.FINISHED_ABORTED
        assert r.num_output_tokens == order.index(i)
    _no_mismatch(sched)
    plugin_clean(sched)


@_params(ASYNC)
def test_prefix_caching_for_prefill_dedup(kind, model):
    """test_prefix_caching_for_prefill_dedup: two requests with the same 100-token prompt admitted in one step
    share every full block: the second computes only the last 4 tokens; each later arrival of the same prompt
    likewise. (The plugin plans the second admission at 100 tokens, not knowing the first will cache the blocks
    they share; vLLM's hit is larger, the request finishes its prompt with 4, and the plugin counts that as the
    plan carried out, `cache_shortened_prefills`.)"""
    n, bs = 100, 16
    sched = make_scheduler(kind, model, max_num_batched_tokens=1000, prefix_caching=True, block_size=bs)
    requests = make_requests(5, n, max_tokens=3, same_prompt=True, block_size=bs)
    r0, r1 = requests.pop(0), requests.pop(0)
    sched.add_request(r0)
    sched.add_request(r1)
    out = sched.schedule()
    assert out.num_scheduled_tokens == {r0.request_id: n, r1.request_id: n % bs}
    outs = deque([out, sched.schedule()])
    while outs:
        added = requests.pop(0) if requests else None
        if added is not None:
            sched.add_request(added)
        out = outs.popleft()
        sched.update_from_output(out, runner_output(out))
        out = sched.schedule()
        if out.num_scheduled_tokens:
            outs.append(out)
            if added is not None:
                assert out.num_scheduled_tokens[added.request_id] == n % bs
    assert sched.get_num_unfinished_requests() == 0
    _no_mismatch(sched)
    if kind.policy:
        assert sched.stats["cache_shortened_prefills"] == 1  # r1 only: later arrivals were planned with their hit
        assert sched.stats["prefix_cache_hits"] == 4 * (n - n % bs)
        plugin_clean(sched)


@_params(ASYNC)
def test_prefix_caching_for_multi_turn(kind, model):
    """test_prefix_caching_for_multi_turn: five conversations of 100 prompt and 200 output tokens; each next turn's
    prompt is the whole previous turn, and it computes only the tokens past the last full cached block."""
    n, out_len, bs = 100, 200, 16
    sched = make_scheduler(kind, model, max_num_batched_tokens=1000, prefix_caching=True, block_size=bs)
    first = make_requests(5, n, max_tokens=out_len, block_size=bs)
    for r in first:
        sched.add_request(r)
    _drain(sched, deque([sched.schedule(), sched.schedule()]))
    assert sched.get_num_unfinished_requests() == 0
    from vllm.v1.utils import ConstantList

    nxt = make_requests(5, n + out_len, max_tokens=out_len, block_size=bs)
    for prev, r in zip(first, nxt, strict=True):
        r.prompt_token_ids = prev.prompt_token_ids + list(prev.output_token_ids)
        r._all_token_ids = r.prompt_token_ids.copy()
        r.all_token_ids = ConstantList(r._all_token_ids)
        r.block_hashes = []
        r.update_block_hashes()
    for r in nxt:
        sched.add_request(r)
    out = sched.schedule()
    for r in nxt:
        assert out.num_scheduled_tokens[r.request_id] == r.num_prompt_tokens % bs
    _no_mismatch(sched)
    if kind.policy:
        assert sched.stats["cache_shortened_prefills"] == 0  # each hit was known when planning


# --- tests/v1/core/test_deferred_block_free.py ------------------------------------------------------------------


def _deferring(kind, model, **kw):
    sched = make_scheduler(kind, model, **kw)
    sched.defer_block_free = True  # vLLM turns it on only with a PD connector; the mechanism does not need one
    return sched


def _in_flight(sched, max_tokens=5):
    """A request's prefill and one decode scheduled ahead of it, as async scheduling does."""
    req = make_requests(1, PROMPT, max_tokens=max_tokens, stop_token_ids=[STOP])[0]
    sched.add_request(req)
    out0 = sched.schedule()
    assert out0.num_scheduled_tokens[req.request_id] == PROMPT
    out1 = sched.schedule()
    assert out1.num_scheduled_tokens[req.request_id] == 1
    return req, out0, out1


@_params(ASYNC)
def test_gate_disabled_without_connector(kind, model):
    """test_gate_disabled_without_connector: async scheduling alone does not defer frees."""
    sched = make_scheduler(kind, model)
    assert not sched.defer_block_free
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req, out0, out1 = _in_flight(sched)
    assert pool.get_num_free_blocks() < free0
    sched.update_from_output(out0, runner_output(out0, STOP))
    assert req.is_finished() and not sched.deferred_frees
    assert pool.get_num_free_blocks() == free0


@_params(ASYNC)
def test_finish_defers_free_until_inflight_step_done(kind, model):
    """test_finish_defers_free_until_inflight_step_done: a request stopped while its next step is in flight keeps
    its blocks until that step's output is processed."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req, out0, out1 = _in_flight(sched)
    held = pool.get_num_free_blocks()
    sched.update_from_output(out0, runner_output(out0, STOP))
    assert req.is_finished() and len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    sched.update_from_output(out1, runner_output(out1))
    assert not sched.deferred_frees and pool.get_num_free_blocks() == free0
    plugin_clean(sched)


@_params(ASYNC)
def test_finish_frees_immediately_when_no_inflight_step(kind, model):
    """test_finish_frees_immediately_when_no_inflight_step: with no later step in flight, the free is immediate."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req = make_requests(1, PROMPT, max_tokens=5, stop_token_ids=[STOP])[0]
    sched.add_request(req)
    out0 = sched.schedule()
    sched.update_from_output(out0, runner_output(out0, STOP))
    assert req.is_finished() and not sched.deferred_frees and pool.get_num_free_blocks() == free0
    plugin_clean(sched)


@_params(ASYNC)
def test_abort_defers_free(kind, model):
    """test_abort_defers_free: an abort with two steps in flight frees after the second is processed."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req, out0, out1 = _in_flight(sched)
    held = pool.get_num_free_blocks()
    sched.finish_requests(req.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    sched.update_from_output(out0, runner_output(out0))
    assert len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    sched.update_from_output(out1, runner_output(out1))
    assert not sched.deferred_frees and pool.get_num_free_blocks() == free0
    plugin_clean(sched)


@_params(ASYNC)
def test_preempt_defers_free_and_clears_bookkeeping(kind, model):
    """test_preempt_defers_free_and_clears_bookkeeping: a preemption while steps are in flight (from outside
    schedule() here) withholds the blocks but clears the request's block table at once; the blocks return after
    the newest step is processed. The plugin then resumes the request and finishes it."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req, out0, out1 = _in_flight(sched)
    held = pool.get_num_free_blocks()
    sched.running.remove(req)
    sched._preempt_request(req, time.monotonic())
    assert req.status == RequestStatus.PREEMPTED
    assert len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    for m in sched.kv_cache_manager.coordinator.single_type_managers:
        assert req.request_id not in m.req_to_blocks
    sched.update_from_output(out0, runner_output(out0))
    assert len(sched.deferred_frees) == 1
    sched.update_from_output(out1, runner_output(out1))
    assert not sched.deferred_frees and pool.get_num_free_blocks() == free0
    _drain(sched, deque([sched.schedule()]))
    assert req.status == RequestStatus.FINISHED_LENGTH_CAPPED and req.num_output_tokens == 5
    _no_mismatch(sched)
    plugin_clean(sched)


@_params(ASYNC)
def test_multiple_deferred_frees_drain_in_order(kind, model):
    """test_multiple_deferred_frees_drain_in_order: two requests stopped at once both wait for the same step."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    for r in make_requests(2, PROMPT, max_tokens=5, stop_token_ids=[STOP]):
        sched.add_request(r)
    out0, out1 = sched.schedule(), sched.schedule()
    sched.update_from_output(out0, runner_output(out0, STOP))
    assert len(sched.deferred_frees) == 2 and pool.get_num_free_blocks() < free0
    sched.update_from_output(out1, runner_output(out1))
    assert not sched.deferred_frees and pool.get_num_free_blocks() == free0
    plugin_clean(sched)


@_params(ASYNC)
def test_fence_held_across_multiple_inflight_steps(kind, model):
    """test_fence_held_across_multiple_inflight_steps: three steps scheduled ahead (a prefill, two decodes); an
    abort holds the blocks until the newest step is processed, not the first."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req = make_requests(1, PROMPT, max_tokens=10)[0]
    sched.add_request(req)
    outs = [sched.schedule() for _ in range(3)]
    assert [o.num_scheduled_tokens[req.request_id] for o in outs] == [PROMPT, 1, 1]
    assert sched.sched_step_seq == 3
    held = pool.get_num_free_blocks()
    assert held < free0
    sched.finish_requests(req.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(sched.deferred_frees) == 1 and sched.deferred_frees[0][0] == 3
    for out in outs[:2]:
        sched.update_from_output(out, runner_output(out))
        assert len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    sched.update_from_output(outs[2], runner_output(outs[2]))
    assert not sched.deferred_frees and pool.get_num_free_blocks() == free0
    _no_mismatch(sched)
    plugin_clean(sched)


@_params(ASYNC)
def test_max_tokens_finish_frees_immediately_with_other_inflight(kind, model):
    """test_max_tokens_finish_frees_immediately_with_other_inflight: a request that reaches max_tokens is never
    scheduled past it, so it is freed at once though another request's step is in flight."""
    sched = _deferring(kind, model)
    pool = sched.kv_cache_manager.block_pool
    short = make_requests(1, PROMPT, max_tokens=1, ids=["short"])[0]
    long = make_requests(1, PROMPT, max_tokens=100, ids=["long"])[0]
    sched.add_request(short)
    sched.add_request(long)
    out0 = sched.schedule()
    out1 = sched.schedule()
    assert "short" not in out1.num_scheduled_tokens and "long" in out1.num_scheduled_tokens
    before = pool.get_num_free_blocks()
    sched.update_from_output(out0, runner_output(out0))
    assert short.is_finished()
    assert sched.sched_step_seq > sched.processed_step_seq
    assert not sched.deferred_frees and pool.get_num_free_blocks() > before
    _no_mismatch(sched)


@_params(ASYNC)
def test_abort_mid_prefill_defers_free(kind, model):
    """test_abort_mid_prefill_defers_free: an abort while a partial prefill chunk (no placeholder yet) is in flight
    withholds the blocks. vLLM 0.32 lifts long_prefill_token_threshold when a single request is eligible, so a
    second request is queued for the threshold (16) to cut the chunk. (The policy is not told that threshold and
    plans 33 tokens: on the plugin that step counts as mismatched.)"""
    sched = _deferring(kind, model, long_prefill_token_threshold=16)
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req, other = make_requests(2, PROMPT, max_tokens=5)
    sched.add_request(req)
    sched.add_request(other)
    out0 = sched.schedule()
    assert out0.num_scheduled_tokens == {req.request_id: 16, other.request_id: 16}
    assert req.num_output_placeholders == 0 and req.is_prefill_chunk
    held = pool.get_num_free_blocks()
    assert held < free0
    sched.finish_requests(req.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    sched.update_from_output(out0, runner_output(out0, sampled={req.request_id: [], other.request_id: []}))
    assert not sched.deferred_frees
    _drain(sched, deque([_step(sched)]))
    assert other.num_output_tokens == 5 and pool.get_num_free_blocks() == free0
    if kind.policy:
        assert sched.stats["mismatched_steps"] == 1 and sched.stats["fallback_steps"] == 0
        plugin_clean(sched)


@_params(ASYNC)
def test_cow_retentions_deferred_until_copy_step_processed(kind, model):
    """test_cow_retentions_deferred_until_copy_step_processed: the two ends of a block copy queued in a step stay
    out of the free pool until that step is processed; a request that fits only in them is admitted after.
    vLLM 0.32 queues a copy as a (source, copy) pair in `_pending_cow_copies` (later vLLM: `_kv_cache_block_copies`
    and `_cow_blocks_to_release`). The plugin runs with `watermark: 0`: its default leaves 1% of the pool (100
    blocks) free at admission, and the scenario leaves exactly the 2 blocks the late request needs. The scenario's
    exhausted pool is also where the policies' KV rule differs from vLLM's (below)."""
    sched = _deferring(kind, model, plugin={"watermark": 0})
    pool = sched.kv_cache_manager.block_pool
    manager = sched.kv_cache_manager.coordinator.single_type_managers[0]
    req = make_requests(1, PROMPT, max_tokens=5, stop_token_ids=[STOP])[0]
    sched.add_request(req)
    src, dst = pool.get_new_blocks(2)
    manager._pending_cow_copies.append((src, dst))
    out0 = sched.schedule()
    assert [(c.src_block_id, c.dst_block_id) for c in out0.kv_cache_block_copies] == [(src.block_id, dst.block_id)]
    pool.get_new_blocks(pool.get_num_free_blocks())
    late = make_requests(1, 2 * sched.block_size, max_tokens=5, ids=["late"])[0]
    sched.add_request(late)
    out1 = sched.schedule()
    assert src.ref_cnt == 1 and dst.ref_cnt == 1
    assert sched.deferred_frees
    assert not out1.scheduled_new_reqs
    sched.update_from_output(out0, runner_output(out0))
    assert src.ref_cnt == 0 and dst.ref_cnt == 0
    assert not sched.deferred_frees
    out2 = sched.schedule()
    assert [r.req_id for r in out2.scheduled_new_reqs] == ["late"]
    if kind.policy:
        # With the pool exhausted, SLAI and Sarathi-Serve keep Sarathi-Serve's KV rule (a decode runs only while a
        # block is free), which vLLM does not: at out1 the policy either plans nothing but the preemption of the
        # running request (that step goes to vLLM's order) or preempts it to admit "late" on blocks whose free
        # vLLM defers until out1 is processed (vLLM admits nothing: a mismatched step). One step, either way.
        assert sched.stats["mismatched_steps"] + sched.stats["fallback_steps"] == 1, sched.stats
