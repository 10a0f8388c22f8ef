"""The policy seam: an engine builds an `EngineView`, a policy returns a `Plan` (`plan.py`).

A policy never mutates the view or the requests, never imports an engine, and reads time only from
`view.clock`. The simulated engine and the vLLM adapter are the two engines that build views.

Requests are read through these attributes (the simulator's `Request`; the vLLM adapter's wrapper):
`id, arrival, prompt_len, tier, tbt, priority, num_prompt, prefilled, generated, computed, blocks`
and the properties `remaining_prefill`, `is_decoding`, `finished`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from llmsched.policies.plan import Plan, Req

OrderKey = Callable[[Req], tuple]


class EngineView(Protocol):
    clock: float  # seconds; the start of the batch being planned
    waiting: Sequence[Req]  # arrived, holding no KV; queue order (preempted requests at the front)
    running: Sequence[Req]  # holding KV, in admission order
    free_blocks: int
    total_blocks: int
    block_size: int
    watermark_blocks: int
    token_budget: int
    max_num_seqs: int
    max_model_len: int

    def waiting_by(self, key: OrderKey) -> Sequence[Req]:
        """`waiting` ordered by a key that depends only on fixed request attributes (never on time)."""
        ...


class Policy:
    """Base class. Subclasses implement `schedule`; `reserve_max_len` makes the engine reserve
    `max_model_len` tokens of KV per admitted request (Orca, FasterTransformer) instead of the prompt.

    `sarathi_rules`: the policy models Sarathi-Serve's code base (the paper's), whose KV rules differ from vLLM's in
    two ways: (a) a decode gets its slot only while at least one block is free, even when its last block has room
    (Sarathi-Serve's `can_append_slot`; vLLM checks only the block the token needs); (b) after a preemption by
    recompute, the prompt a shortest-prompt-first order sees includes the tokens generated before it (Sarathi-Serve's
    `reset_for_recompute` moves them into the prompt; vLLM's request keeps its prompt length)."""

    name = "policy"
    reserve_max_len = False
    sarathi_rules = False

    def schedule(self, view: EngineView) -> Plan:
        raise NotImplementedError

    def on_batch_done(self, view: EngineView, plan: Plan, start: float, end: float) -> None:
        """Called by the engine after each batch, with the view after the batch."""
