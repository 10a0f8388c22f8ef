"""The policy seam: an engine builds an `EngineView`, a policy returns a `Plan` (`plan.py`).

A policy never mutates the view or the requests, never imports an engine, and reads time only from
`view.clock`. The simulated engine and the vLLM adapter are the two engines that build views.

Requests are read through these attributes (the simulator's `Request`; the vLLM adapter's wrapper):
`id, arrival, prompt_len, tier, tbt, priority, num_prompt, prefilled, generated, computed, blocks`
and the properties `remaining_prefill`, `is_decoding`, `finished`.

Prefix caching (`enable_prefix_caching`, vLLM's name). An engine that reuses KV across requests tells the policy, per
request, what it would reuse. The policy needs nothing else: `BatchBuilder` accounts admission with it.
- `prefix_hit(r)`: for a waiting request, what admitting it now would reuse. `tokens` are whole blocks of its prompt,
  at most num_prompt - 1 (the last token is always computed; vLLM caps its hit so). `held_blocks` are those of the
  hit blocks that running requests hold already. The first chunk is then at most num_prompt - tokens, and admission
  costs the prompt's blocks less `held_blocks` free blocks (an evictable hit block counts as free until reused, as in
  vLLM's free count). The hit is what the engine reuses if the request is admitted in the batch being planned.
  In vLLM: `find_longest_cache_hit(req.block_hashes, req.num_tokens - 1)`, and the hit blocks with ref_cnt > 0.
- `cached_prefix(r)`: `prefix_hit(r).tokens`, for orders that rank by it.
- `exclusive_blocks(r)`: for a running request, its blocks no other request holds, i.e. what preempting it frees
  (in vLLM: its blocks with ref_cnt == 1).
- `waiting_by_cache(key)`: `waiting` ordered by `key(r, cached_prefix(r))`. An engine may keep it however it likes;
  `policies.order.sorted_by_cache` sorts per call.
Without prefix caching these read 0, 0, `r.blocks` and the fixed order `key(r, 0)`; policies ask only when
`enable_prefix_caching` is set (`policies.order.by_cache`, `BatchBuilder`). A waiting request's own attributes do not
reflect the cache: `prefilled` is 0 and `remaining_prefill` its whole `num_prompt` until admission, when the engine
counts the hit as prefilled (`BatchBuilder` takes the hit off the first chunk itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from llmsched.policies.plan import Plan, Req

OrderKey = Callable[[Req], tuple]
CacheKey = Callable[[Req, int], tuple]  # over a request and the tokens of its prompt cached now


class PrefixHit(NamedTuple):
    tokens: int = 0  # prompt tokens admission would reuse (whole blocks, at most num_prompt - 1)
    held_blocks: int = 0  # of the hit's blocks, those running requests hold (they cost no free block)


NO_HIT = PrefixHit()


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
    enable_prefix_caching: bool

    def waiting_by(self, key: OrderKey) -> Sequence[Req]:
        """`waiting` ordered by a key that depends only on fixed request attributes (never on time)."""
        ...

    def waiting_by_cache(self, key: CacheKey) -> Sequence[Req]:
        """`waiting` ordered by `key(r, cached_prefix(r))` (only asked with prefix caching on)."""
        ...

    def prefix_hit(self, r: Req) -> PrefixHit:
        """What admitting waiting request `r` now would reuse (only asked with prefix caching on)."""
        ...

    def cached_prefix(self, r: Req) -> int:
        """Tokens of waiting request `r`'s prompt the engine would reuse if admitted now."""
        ...

    def exclusive_blocks(self, r: Req) -> int:
        """Blocks of running request `r` no other request holds (what preempting it frees)."""
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

    def repeats(self, view: EngineView) -> bool:
        """Would `schedule` plan, now and at each following batch until something changes, every running decode and,
        in running order, a chunk of every prefill in progress as large as what the token budget leaves (Sarathi's
        stall-free batching with nothing to admit), and nothing else? Asked after each batch. True lets an engine run
        those batches without asking (`SimEngine._repeat`) for as long as no request arrives, finishes or completes
        its prompt (but see `bulk_finishes`), the time limit is not reached, and every decode keeps a free KV block to
        spare beyond the one it may take; it then reports them with one `on_batches_done`. While requests wait, the
        engine runs only batches that the decodes and chunks fill to the budget this way (a policy admits nothing into
        a full batch). The default, False, is always safe."""
        return False

    # True: while nothing waits, `repeats` also holds past batches in which requests finish or complete their prompt
    # (the decode a completed prompt starts then runs each batch too), as long as the decodes fit the token budget.
    # The engine then runs those batches without asking as well (`on_batches_done` gets who finished). For a policy
    # whose plan for the requests that remain does not depend on those that left. Read after each `repeats`.
    bulk_finishes = False

    # Optional: (free KV blocks after a batch, its start, its end) -> bool. An engine running batches without asking
    # (`repeats`) calls it after each one, in order, and stops the stretch after a batch it answers False to: the
    # policy would plan the next one otherwise. For a policy whose `repeats` holds whatever the batches' times.
    bulk_batch_done: Callable[[int, float, float], bool] | None = None

    def holds(self, view: EngineView) -> tuple[Sequence[Req], float] | None:
        """Asked after each batch where `repeats` is False. Would `schedule` plan, at each following batch that starts
        before the time returned, a chunk of the whole token budget for the next prefill of the sequence returned (in
        turn, from its first), and nothing else: no decode, no admission (a full batch admits nothing), as long as no
        request arrives and that prefill has more than the budget left? True lets an engine run those batches without
        asking (`SimEngine._hold`) and report them with one `on_chunks_done`. The default, None (no), is always
        safe."""
        return None

    def on_chunks_done(
        self, view: EngineView, chunked: Sequence[Req], starts: Sequence[float], ends: Sequence[float]
    ) -> None:
        """Batches the engine ran without asking as `holds` allowed, in order; `chunked[i]` got the i-th one's chunk.
        The view is the one after the last. A policy keeps its state as if `schedule` had planned each and
        `on_batch_done` had followed it."""
        raise NotImplementedError

    def on_batches_done(
        self,
        view: EngineView,
        plan: Plan,
        starts: Sequence[float],
        ends: Sequence[float],
        finished: Sequence[Req] = (),
    ) -> None:
        """Batches the engine ran without asking (`repeats`), in order; `plan` is the last one's and the view the one
        after it. A policy that overrides `repeats` keeps its state as if `on_batch_done` had followed each.
        With `bulk_finishes`, `finished` holds the requests that finished in them, in order (those of the last batch
        are in `plan` too), and a prefill whose prompt completed before the last batch is among its decodes."""
        if type(self).on_batch_done is Policy.on_batch_done:
            return  # keeps no state
        for start, end in zip(starts, ends, strict=True):
            self.on_batch_done(view, plan, start, end)
