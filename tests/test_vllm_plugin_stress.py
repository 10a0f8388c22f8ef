"""The plugin's schedulers under a random mix of what vLLM's engine and users do between steps: arrivals with
shared prompt prefixes, aborts, preemptions from outside schedule(), prefix cache resets (with and without the
running requests), a small KV pool, one or two steps in flight. Whatever happens, the plugin never raises into
vLLM, every request not aborted gets all its tokens, and nothing is left behind: not in vLLM, not in the plugin,
not in the policy.

Needs the `vllm` extra; skipped without it.
"""

from __future__ import annotations

import random
import time
from collections import deque

import pytest

pytest.importorskip("vllm")

from vllm.v1.request import RequestStatus  # noqa: E402
from vllm_harness import Kind, make_requests, make_scheduler, plugin_clean, runner_output, write_model_config  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model_config(tmp_path_factory.mktemp("model"))


def _prompt_requests(rng, n, start):
    """Requests whose prompts start with one of two shared prefixes (or none), of mixed lengths."""
    prefixes = [[7] * 48, [9] * 80]
    reqs = []
    for i in range(n):
        k = rng.randrange(3)
        tokens = (prefixes[k] if k < 2 else []) + [rng.randrange(10, 1000) for _ in range(rng.randrange(1, 90))]
        reqs += make_requests(1, max_tokens=rng.randrange(1, 12), ids=[f"r{start + i}"], prompts=[tokens])
    return reqs


KINDS = [Kind(p, a) for p in ("slai", "sarathi", "sarathi-spf") for a in (False, True)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_random_engine_events_never_break_the_plugin(kind, model, seed):
    rng = random.Random(seed)
    depth = 2 if kind.is_async else 1
    sched = make_scheduler(kind, model, num_blocks=40, max_num_seqs=8, max_num_batched_tokens=128, prefix_caching=True)
    added, aborted, n = {}, set(), 0
    inflight: deque = deque()
    for _ in range(3000):
        if n < 40 and rng.random() < 0.5:
            for r in _prompt_requests(rng, rng.randrange(1, 4), n):
                sched.add_request(r)
                added[r.request_id] = r
            n = len(added)
        event = rng.random()
        live = [r for r in added.values() if not r.is_finished()]
        if event < 0.04 and live:
            victim = rng.choice(live)
            sched.finish_requests(victim.request_id, RequestStatus.FINISHED_ABORTED)
            aborted.add(victim.request_id)
        elif event < 0.08 and sched.running:
            victim = rng.choice(sched.running)
            sched.running.remove(victim)
            sched._preempt_request(victim, time.monotonic())
        elif event < 0.10:
            sched.reset_prefix_cache(reset_running_requests=rng.random() < 0.5)
        if sched.has_requests() and len(inflight) < depth:
            out = sched.schedule()
            partial = {rid for rid in out.num_scheduled_tokens if sched.requests[rid].is_prefill_chunk}
            inflight.append((out, partial))
            if len(inflight) < depth:
                continue
        if inflight:
            out, partial = inflight.popleft()
            tokens = {rid: ([] if rid in partial else [rng.randrange(10, 1000)]) for rid in out.num_scheduled_tokens}
            sched.update_from_output(out, runner_output(out, sampled=tokens))
        elif n >= 40 and not sched.has_requests():
            break
    assert n >= 40 and not sched.has_requests() and not inflight, "the scenario did not finish"
    for rid, r in added.items():
        if rid not in aborted:
            assert r.status == RequestStatus.FINISHED_LENGTH_CAPPED, (rid, r.status)
            assert r.num_output_tokens == r.max_tokens, rid
    assert sched.stats["policy_steps"] > sched.stats["fallback_steps"]
    plugin_clean(sched)
