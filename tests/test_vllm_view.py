"""The vLLM adapter's pure parts (no vLLM needed): per-request SLO resolution, the reserving view of KV,
and ModelSpecs from Hugging Face configs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from llmsched.errors import UserError
from llmsched.integrations.vllm.view import RequestView, TierTable, VLLMView
from llmsched.perf.hf_config import spec_from_hf

TIERS = TierTable.from_spec("paying:0.1:tbt=0.05,free:0.9:tbt=0.5")


def test_tier_args_resolve_with_documented_defaults():
    assert TIERS.resolve({"tier": "paying"}) == ("paying", 0.05, 0)
    assert TIERS.resolve({"tier": "free"}) == ("free", 0.5, 1)
    assert TIERS.resolve(None) == ("default", 0.2, 2)  # after every named tier
    assert TIERS.resolve({"tier": "gold"}) == ("gold", 0.2, 2)
    assert TIERS.resolve({"tier": "free", "tbt": 0.3, "priority": 0}) == ("free", 0.3, 0)
    assert TierTable().resolve({}) == ("default", 0.2, 0)


@pytest.mark.parametrize("extra", [{"tbt": "fast"}, {"tbt": -1}, {"tbt": float("nan")}, {"priority": "high"}])
def test_malformed_tier_args_are_ignored_not_fatal(extra):
    assert TIERS.resolve({"tier": "paying", **extra}) == ("paying", 0.05, 0)


def _req(prompt, computed, outputs, status="RUNNING", placeholders=0, priority=0):
    tokens = prompt + outputs
    return SimpleNamespace(
        request_id="r", arrival_time=0.0, num_prompt_tokens=prompt, sampling_params=None,
        num_tokens=tokens, num_tokens_with_spec=tokens, num_output_placeholders=placeholders,
        num_computed_tokens=computed, num_output_tokens=outputs, status=SimpleNamespace(name=status),
        is_finished=lambda: False, priority=priority,
    )  # fmt: skip


def test_vllm_request_priority_replaces_the_tiers_under_priority_scheduling_and_extra_args_win():
    assert TIERS.resolve({"tier": "free"}, request_priority=-3) == ("free", 0.5, -3)
    assert TIERS.resolve(None, request_priority=7) == ("default", 0.2, 7)
    assert TIERS.resolve({"tier": "free", "priority": 0}, request_priority=7) == ("free", 0.5, 0)
    assert RequestView(_req(10, 0, 0, "WAITING", priority=9), 0, TIERS, 16).priority == 2  # fcfs engine: tiers
    assert RequestView(_req(10, 0, 0, "WAITING", priority=9), 0, TIERS, 16, request_priority=True).priority == 9


class _Cache:
    """A prefix cache holding `hit` tokens of every prompt, `held` of its blocks held by running requests; every
    running request holds `exclusive` blocks no other request holds."""

    def __init__(self, hit, held, exclusive=0):
        self.hit, self.held, self.exclusive, self.asked = hit, held, exclusive, 0

    def lookup(self, req):
        self.asked += 1
        return self.hit, self.held

    def exclusive_blocks(self, req):
        return self.exclusive


def test_a_waiting_request_shows_its_cached_prefix_and_plans_only_the_rest():
    from llmsched.policies import make_policy

    cache = _Cache(hit=256, held=1, exclusive=1)  # 2 blocks of 128 cached, one of them held by a running request
    waiting = RequestView(_req(300, 0, 0, "WAITING"), 0, TIERS, 128)
    running = RequestView(_req(300, 256 + 32, 0), 1, TIERS, 128)
    view = VLLMView(0.0, [running], [waiting], 10, 20, 128, 0.0, 512, 8, 2048, cache=cache)
    assert view.enable_prefix_caching
    assert waiting.num_prompt == 300 and waiting.remaining_prefill == 300  # order keys: no lookup, never moving
    assert cache.asked == 0  # nothing is looked up until a policy asks
    assert view.prefix_hit(waiting) == (256, 1) and view.cached_prefix(waiting) == 256
    # a request holding KV has no lookup: its progress is vLLM's; preempting it frees its own block and the one
    # block of its prompt it is still owed
    asked = cache.asked
    assert view.cached_prefix(running) == 0 and cache.asked == asked
    assert running.remaining_prefill == 12 and view.exclusive_blocks(running) == 1 + 0
    plan = make_policy("sarathi").schedule(view)
    assert [(w, n) for w, n in plan.prefills if w is waiting] == [(waiting, 44)]  # vLLM computes the rest
    off = VLLMView(0.0, [running], [waiting], 10, 20, 128, 0.0, 512, 8, 2048)
    assert not off.enable_prefix_caching and off.exclusive_blocks(running) == running.blocks  # caching off


def test_a_request_decodes_once_its_prompt_is_scheduled_output_in_flight_or_not():
    assert RequestView(_req(40, 40, 0), 0, TIERS, 16).is_decoding  # last chunk scheduled, its token not out yet
    assert RequestView(_req(40, 40, 0, placeholders=1), 0, TIERS, 16).is_decoding  # async: a placeholder
    assert RequestView(_req(40, 42, 1, placeholders=2), 0, TIERS, 16).is_decoding  # async: two steps in flight
    assert not RequestView(_req(40, 39, 0), 0, TIERS, 16).is_decoding  # one prompt token left
    assert not RequestView(_req(40, 16, 0), 0, TIERS, 16).is_decoding  # a partial chunk (async: no placeholder)


def test_request_view_phases_and_reserved_blocks():
    prefill = RequestView(_req(300, 128, 0), 0, TIERS, 128)  # second chunk pending
    assert not prefill.is_decoding and prefill.remaining_prefill == 172 and prefill.num_prompt == 300
    assert prefill.held_blocks == 1 and prefill.blocks == 3  # the view reserves the whole prompt
    decode = RequestView(_req(300, 305, 6), 1, TIERS, 128)  # 6 tokens out, the 6th not yet computed
    assert decode.is_decoding and decode.remaining_prefill == 0 and decode.blocks == 3
    resumed = RequestView(_req(300, 0, 6, "PREEMPTED"), 2, TIERS, 128)  # recompute prompt + outputs
    assert not resumed.is_decoding and resumed.num_prompt == 306 and resumed.blocks == 0
    view = VLLMView(0.0, [prefill, decode], [resumed], 10, 20, 128, 0.01, 512, 128, 2048)
    assert view.free_blocks == 8  # 10 free less the 2 blocks the running prefill is still owed
    assert view.watermark_blocks == 0

    def key(r):
        return (r.num_prompt,)

    assert view.waiting_by(key) == [resumed]
    # The scheduler keeps one view and moves it along: the new step's queues, clock and free blocks, the same
    # limits, and no order cached from the step before.
    assert view.at(1.0, [decode], [], 10) is view
    assert (view.clock, view.free_blocks, view.max_num_seqs, view.token_budget) == (1.0, 10, 128, 512)
    assert view.waiting_by(key) == []


def test_spec_from_hf_config(tmp_path):
    cfg = {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
           "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = spec_from_hf(tmp_path, "smol")
    assert (spec.layers, spec.hidden, spec.kv_heads, spec.head_dim, spec.max_len) == (30, 576, 3, 64, 8192)
    assert 130e6 < spec.layer_params + spec.hidden * spec.vocab < 140e6  # SmolLM2-135M (tied embedding)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": "big"}))
    with pytest.raises(UserError, match="hidden_size"):
        spec_from_hf(tmp_path)
