"""The cache-ranked waiting orders inside vLLM: the plugin's view looks each waiting request's prefix up in vLLM's own
cache, so `slai-lpm` (longest cached prefix first) and `slai-uncached` (shortest uncached prompt first) rank as they
do in the simulator. vLLM schedulers built without an engine (tests/vllm_harness.py); skipped without vLLM."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from vllm_harness import Kind, make_requests, make_scheduler, plugin_clean, runner_output, write_model_config  # noqa: E402

BS = 16


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_model_config(tmp_path_factory.mktemp("model"))


def _run_out(sched):
    while sched.get_num_unfinished_requests():
        out = sched.schedule()
        sched.update_from_output(out, runner_output(out))


@pytest.mark.parametrize(("policy", "first"), [("slai-lpm", "cached"), ("slai-uncached", "cached"), ("slai", "short")])
def test_a_waiting_request_with_a_cached_prefix_is_admitted_first_by_the_cache_orders(model, policy, first):
    """A 64-token prompt is served and stays cached. Then a short new prompt (40 tokens) arrives before a longer one
    (80) that starts with the cached 64, and one request runs at a time: the cache orders admit the cached one first
    (longest cached prefix; 16 uncached tokens against 40), shortest-prompt-first the short one; vLLM reuses the
    cached blocks either way."""
    sched = make_scheduler(Kind(policy), model, block_size=BS, max_num_seqs=1, max_num_batched_tokens=256,
                           prefix_caching=True)  # fmt: skip
    seed, short, cached = make_requests(
        3, max_tokens=2, block_size=BS, ids=["seed", "short", "cached"],
        prompts=[[7] * 64, [9] * 40, [7] * 64 + [8] * 16],
    )  # fmt: skip
    sched.add_request(seed)
    _run_out(sched)
    sched.add_request(short)
    sched.add_request(cached)
    out = sched.schedule()
    want = {"short": 40} if first == "short" else {"cached": 16}  # the cached request prefills past its 64 cached
    assert out.num_scheduled_tokens == want
    sched.update_from_output(out, runner_output(out))
    _run_out(sched)
    assert sched.stats["prefix_cache_hits"] == 64 and sched.stats["mismatched_steps"] == 0
    plugin_clean(sched)
