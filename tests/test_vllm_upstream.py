"""vLLM 0.32's own scheduler scenarios, run against vLLM's scheduler classes and the plugin's (SLAI and
Sarathi-Serve, on `Scheduler` and on `AsyncScheduler`): where prefix caching, preemption (also from outside
`schedule()`), request priority and deferred block frees meet.

Each test restates one of vLLM's scheduler unit tests (Apache-2.0, copyright the vLLM project contributors;
named in its docstring: tests/v1/core/test_scheduler.py, the worker-slot over-admission tests beside it and
tests/v1/core/test_deferred_block_free.py) in this repository's own code, for vLLM 0.32.0, with the scheduler class
as a parameter. The async scheduler's scenarios are in test_vllm_upstream_async.py. Where a scenario asserts
something the plugin does differently on purpose, the test says so and asserts the plugin's behaviour.

Needs the `vllm` extra; skipped without it. Schedulers are built without an engine (`vllm_harness`).
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("vllm")

from vllm.v1.request import RequestStatus  # noqa: E402
from vllm_harness import ALL, SYNC, make_requests, make_scheduler, plugin_clean, runner_output, write_model_config  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model_config(tmp_path_factory.mktemp("model"))


def _params(kinds):
    return pytest.mark.parametrize("kind", kinds, ids=[k.name for k in kinds])


def _run_until_done(sched, out, max_steps=200):
    """Feed each step its output (one token per request) until nothing is left to schedule."""
    for _ in range(max_steps):
        sched.update_from_output(out, runner_output(out))
        if not sched.has_requests():
            return
        out = sched.schedule()
    raise AssertionError("requests left after max_steps")


# --- prefix cache counters (tests/v1/core/test_scheduler.py) ------------------------------------------------


@_params(ALL)
def test_preemption_re_records_prefix_cache_query(kind, model):
    """test_preemption_re_records_prefix_cache_query: a request preempted outside schedule() is looked up again
    on resumption and counted as a preempted request's lookup. (On the plugin this crashed inside vLLM's request
    queue: the policy still held the request as a paused prefill and planned it twice.)"""
    sched = make_scheduler(kind, model, prefix_caching=True)
    req = make_requests(1)[0]
    sched.add_request(req)
    out = sched.schedule()
    stats = sched.kv_cache_manager.prefix_cache_stats
    assert (stats.requests, stats.preempted_requests) == (1, 0)
    sched.running.remove(req)
    sched._preempt_request(req, 0.0)
    assert req.status == RequestStatus.PREEMPTED
    sched.update_from_output(out, runner_output(out, sampled={req.request_id: [1000]}))
    assert req.num_stale_output_tokens == 0
    stats = sched.kv_cache_manager.prefix_cache_stats  # update_from_output handed the last one to the loggers
    out = sched.schedule()
    assert req.status == RequestStatus.RUNNING
    assert stats.preempted_requests == 1
    if kind.policy:
        assert out.num_scheduled_tokens == {req.request_id: req.num_tokens}  # admitted once, all of it
        assert sched.stats["prefix_cache_requests"] == sched.stats["prefix_cache_preempted_requests"] == 1
        assert sched.stats["mismatched_steps"] == sched.stats["fallback_steps"] == 0
        _run_until_done(sched, out)
        plugin_clean(sched)


@_params(ALL)
def test_prefix_cache_stats_not_recorded_when_caching_disabled(kind, model):
    """test_prefix_cache_stats_not_recorded_when_caching_disabled: caching off, admissions record no lookup."""
    sched = make_scheduler(kind, model, prefix_caching=False)
    for r in make_requests(2):
        sched.add_request(r)
    sched.schedule()
    stats = sched.kv_cache_manager.prefix_cache_stats
    assert (stats.requests, stats.queries, stats.hits) == (0, 0, 0)
    if kind.policy:
        assert sched.stats["prefix_cache_requests"] == 0


@_params(ALL)
def test_prefix_cache_stats_counted_once_for_retried_then_scheduled_request(kind, model):
    """test_prefix_cache_stats_counted_once_for_retried_then_scheduled_request: a request with a real cache hit
    whose first allocation fails is counted once, hits included, when it is admitted a step later. (The plugin
    planned the failed admission: that step counts as mismatched, as it should.)"""
    bs = 16
    sched = make_scheduler(kind, model, prefix_caching=True, chunked_prefill=False, block_size=bs)
    seed = make_requests(1, 2 * bs, max_tokens=2, same_prompt=True, ids=["seed"])[0]
    sched.add_request(seed)
    _run_until_done(sched, sched.schedule())
    stats = sched.kv_cache_manager.prefix_cache_stats
    assert (stats.requests, stats.queries, stats.hits) == (0, 0, 0)
    retried = make_requests(1, 3 * bs, max_tokens=1, same_prompt=True, ids=["retried"])[0]
    sched.add_request(retried)
    real = sched.kv_cache_manager.allocate_slots
    results = []

    def allocate_slots(*args, **kwargs):
        result = real(*args, **kwargs) if results else None
        results.append(result)
        return result

    sched.kv_cache_manager.allocate_slots = allocate_slots
    assert not sched.schedule().scheduled_new_reqs
    assert (stats.requests, stats.queries, stats.hits) == (0, 0, 0)
    out = sched.schedule()
    assert "retried" in out.num_scheduled_tokens
    assert results[0] is None and results[1] is not None
    assert (stats.requests, stats.queries, stats.hits) == (1, retried.num_tokens, 2 * bs)
    if kind.policy:  # the plugin's cumulative counters: the seed's miss, then the retried request's hit
        assert sched.stats["prefix_cache_queries"] == seed.num_prompt_tokens + retried.num_tokens
        assert sched.stats["prefix_cache_hits"] == 2 * bs
        assert out.num_scheduled_tokens["retried"] == bs  # planned with the hit: the uncached block only
        assert sched.stats["mismatched_steps"] == 1


@_params(ALL)
def test_scheduler_reset_prefix_cache(kind, model):
    """test_scheduler_reset_prefix_cache: the cache cannot be reset while running requests hold blocks; with
    reset_running_requests=True every running request goes back to the waiting queue, in order."""
    sched = make_scheduler(kind, model, prefix_caching=True)
    requests = make_requests(10)
    for r in requests:
        sched.add_request(r)
    out = sched.schedule()
    assert len(sched.waiting) == 0 and sched.running == requests
    assert not sched.reset_prefix_cache()
    assert sched.reset_prefix_cache(reset_running_requests=True)
    assert len(sched.waiting) == len(requests) and len(sched.running) == 0
    assert list(sched.waiting) == requests
    if kind.policy:  # and the plugin carries on: every request is resumed and finishes
        sched.update_from_output(out, runner_output(out))
        _run_until_done(sched, sched.schedule())
        assert all(r.status == RequestStatus.FINISHED_LENGTH_CAPPED for r in requests)
        assert sched.stats["fallback_steps"] == 0
        plugin_clean(sched)


# --- worker slots after an out-of-band preemption (the over-admission tests beside test_scheduler.py) ---------


class WorkerSlots:
    """The V2 model runner's request slots: a request takes one when it appears in scheduled_new_reqs and frees
    it when it is reported finished or preempted; asserting "No free indices" where the worker would."""

    def __init__(self, n: int) -> None:
        self.n, self.held = n, set()

    def apply(self, out) -> None:
        self.held -= set(out.finished_req_ids) | set(out.preempted_req_ids)
        for rid in out.scheduled_cached_reqs.req_ids:
            assert rid in self.held, f"cached request {rid} has no worker slot"
        for new in out.scheduled_new_reqs:
            self.held.discard(new.req_id)
            assert len(self.held) < self.n, "No free indices"
            self.held.add(new.req_id)


@_params(ALL)
def test_reset_prefix_cache_priority_does_not_over_admit_worker_slot(kind, model):
    """test_reset_prefix_cache_priority_does_not_over_admit_worker_slot: under priority scheduling, A (priority
    10) runs alone (max_num_seqs 1), is preempted by reset_prefix_cache(reset_running_requests=True), and B
    (priority 0) arrives: the next step reports A's preemption and admits B, not A. The plugin reads vLLM's
    request priority when the engine schedules by priority (it ignored it and admitted A)."""
    sched = make_scheduler(kind, model, max_num_seqs=1, prefix_caching=True, priority=True, v2_model_runner=True)
    slots = WorkerSlots(1)
    (a,) = make_requests(1, 4, max_tokens=100, ids=["A"])
    a.priority = 10
    sched.add_request(a)
    out = sched.schedule()
    slots.apply(out)
    assert [r.req_id for r in out.scheduled_new_reqs] == ["A"]
    sched.update_from_output(out, runner_output(out, 42))
    assert a.status == RequestStatus.RUNNING and a in sched.running
    assert sched.reset_prefix_cache(reset_running_requests=True)
    assert a.status == RequestStatus.PREEMPTED
    (b,) = make_requests(1, 4, max_tokens=100, ids=["B"])
    b.priority = 0
    sched.add_request(b)
    out = sched.schedule()
    assert "A" in out.preempted_req_ids
    assert [r.req_id for r in out.scheduled_new_reqs] == ["B"]
    slots.apply(out)
    assert slots.held == {"B"}
    if kind.policy:
        assert sched.stats["mismatched_steps"] == sched.stats["fallback_steps"] == 0
        sched.update_from_output(out, runner_output(out))
        _run_until_done(sched, sched.schedule(), max_steps=400)
        assert a.status == b.status == RequestStatus.FINISHED_LENGTH_CAPPED
        plugin_clean(sched)


@_params(ALL)
def test_reset_prefix_cache_same_step_resume_purges_then_re_adds(kind, model):
    """test_reset_prefix_cache_same_step_resume_purges_then_re_adds: with no competitor, the request preempted
    by the reset is resumed in the very next step, reported both preempted and new (V2 runner)."""
    sched = make_scheduler(kind, model, max_num_seqs=1, v2_model_runner=True)
    slots = WorkerSlots(1)
    (a,) = make_requests(1, 4, max_tokens=100, ids=["A"])
    sched.add_request(a)
    out = sched.schedule()
    slots.apply(out)
    sched.update_from_output(out, runner_output(out, 42))
    assert sched.reset_prefix_cache(reset_running_requests=True)
    assert a.status == RequestStatus.PREEMPTED and a.num_computed_tokens == 0
    out = sched.schedule()
    assert "A" in out.preempted_req_ids
    assert "A" in [r.req_id for r in out.scheduled_new_reqs]
    slots.apply(out)
    assert slots.held == {"A"}
    if kind.policy:  # recompute: the prompt and the token generated before the reset
        assert out.num_scheduled_tokens == {"A": 5}
        sched.update_from_output(out, runner_output(out))
        _run_until_done(sched, sched.schedule(), max_steps=400)
        plugin_clean(sched)


# --- deferred block frees (tests/v1/core/test_deferred_block_free.py) ------------------------------------------


@_params(SYNC)  # the point is the step fence without async scheduling's placeholders
def test_non_async_abort_defers_via_last_sched_seq(kind, model):
    """test_non_async_abort_defers_via_last_sched_seq: without async scheduling, an abort while the request's
    step is in flight holds its blocks until that step's output is processed."""
    sched = make_scheduler(kind, model)
    sched.defer_block_free = True
    pool = sched.kv_cache_manager.block_pool
    free0 = pool.get_num_free_blocks()
    req = make_requests(1, 33, max_tokens=5)[0]
    sched.add_request(req)
    out = sched.schedule()
    assert req.num_output_placeholders == 0 and not req.is_prefill_chunk
    assert req.last_sched_seq > sched.processed_step_seq
    held = pool.get_num_free_blocks()
    assert held < free0
    sched.finish_requests(req.request_id, RequestStatus.FINISHED_ABORTED)
    assert len(sched.deferred_frees) == 1 and pool.get_num_free_blocks() == held
    sched.update_from_output(out, runner_output(out))
    assert not sched.deferred_frees and pool.get_num_free_blocks() == free0
    plugin_clean(sched)


def test_preempted_request_resumes_after_its_stale_output_under_the_plugin(model):
    """Beyond vLLM's tests: SLAI on vLLM's Scheduler, a decode preempted outside schedule() while its step is in
    flight (the stale-output path of test_preemption_re_records_prefix_cache_query, mid-generation), with a second
    request running: both finish with all their tokens, and no step mismatches."""
    from vllm_harness import Kind

    sched = make_scheduler(Kind("slai"), model, prefix_caching=True)
    a, b = make_requests(2, 40, max_tokens=6)
    sched.add_request(a)
    sched.add_request(b)
    out = sched.schedule()
    sched.update_from_output(out, runner_output(out))
    out = sched.schedule()  # both decode
    sched.running.remove(a)
    sched._preempt_request(a, time.monotonic())
    _run_until_done(sched, out)
    assert a.num_output_tokens == b.num_output_tokens == 6
    assert sched.stats["mismatched_steps"] == sched.stats["fallback_steps"] == 0
    assert sched.stats["prefix_cache_preempted_hits"] == 32  # its own two full blocks, still cached
    plugin_clean(sched)
