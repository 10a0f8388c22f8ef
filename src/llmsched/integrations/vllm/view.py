"""The `EngineView` a policy reads, built from vLLM v1's scheduler state (pinned to vllm 0.32.x).

Differences from the simulated engine, by design (named in docs/vllm.md and the differential test):
- vLLM allocates KV blocks chunk by chunk; the policies (like the reference Sarathi engine) reserve a whole
  prompt on admission. The view presents that reservation: a running prefill "holds" the blocks of its whole
  prompt, and `free_blocks` is vLLM's free count less the blocks still owed to running prefills. The view is
  thus conservative, and vLLM's own allocation never fails for a planned batch.
- Admission watermark: the view applies the plugin's (1% of the pool by default, as the simulator), or vLLM's
  `--watermark` when that is larger (vLLM's default is 0), so that both engines admit alike and vLLM never refuses
  a planned admission.
- Prefix caching (vLLM's automatic prefix caching, when the engine has it on): the view is the interface's cache-aware
  view (`enable_prefix_caching`). `prefix_hit(r)` is what vLLM would take from its cache if a waiting request were
  admitted now (its own lookup, `prefix.PrefixLookup`: whole blocks, at most all tokens but the last, and the hit
  blocks running requests hold), so `BatchBuilder` plans the first chunk after the hit and charges admission as vLLM
  does; `waiting_by_cache` ranks the waiting queue by it (`spf-uncached`, `lpm`); `exclusive_blocks(r)` is what
  preempting a running request gives back (its blocks no other request holds, and the blocks it is still owed). The
  lookup is made only for the requests a policy asks about, once per step. As in the simulator, a waiting request's
  own `remaining_prefill` is its whole prompt until admission.
- Block size is vLLM's (128 tokens on the CPU backend, 16 on GPUs).
- The clock is `time.monotonic()`; arrival times are vLLM's (`time.time()` based), used only for ordering.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llmsched.policies.batch import blocks_for
from llmsched.policies.interface import NO_HIT, CacheKey, OrderKey, PrefixHit
from llmsched.policies.order import sorted_by_cache
from llmsched.workload.tiers import DEFAULT_TBT, SLOTier, parse_tiers

log = logging.getLogger("llmsched.vllm")
try:
    from vllm.v1.request import RequestStatus

    _PREEMPTED: Any = RequestStatus.PREEMPTED  # statuses after it are finished (vLLM's is_finished)
except ImportError:  # the view's unit tests run without vLLM
    _PREEMPTED = None


@dataclass(frozen=True)
class TierTable:
    """Per-request SLO from `SamplingParams(extra_args={"tier": ..., "tbt": ..., "priority": ...})`.

    A request without `tier` is in tier "default" with TBT `default_tbt` (0.2 s, the reference's fallback)
    and priority after every named tier (0 when no tiers are configured). `tbt` and `priority` in
    extra_args override the tier's. A malformed value is ignored (logged once), never fatal."""

    tiers: tuple[SLOTier, ...] = ()
    default_tbt: float = DEFAULT_TBT

    @staticmethod
    def from_spec(spec: str | None, default_tbt: float = DEFAULT_TBT) -> TierTable:
        return TierTable(tuple(parse_tiers(spec)) if spec else (), default_tbt)

    def resolve(self, extra: dict[str, Any] | None, request_priority: int | None = None) -> tuple[str, float, int]:
        """(tier, TBT, priority). `request_priority`: vLLM's own request priority, given when the engine schedules
        by priority (`--scheduling-policy priority`); it replaces the tier's, and extra_args `priority` replaces
        both."""
        extra = extra or {}
        name = extra.get("tier")
        tier = next((t for t in self.tiers if t.name == name), None)
        tbt = tier.tbt if tier else self.default_tbt
        priority = tier.priority if tier else len(self.tiers)
        if request_priority is not None:
            priority = request_priority
        if "tbt" in extra:
            v = extra["tbt"]
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
                tbt = float(v)
            else:
                _warn_once("tbt", f"extra_args tbt={v!r} is not a positive number of seconds; using {tbt}")
        if "priority" in extra:
            v = extra["priority"]
            if isinstance(v, int) and not isinstance(v, bool):
                priority = v
            else:
                _warn_once("priority", f"extra_args priority={v!r} is not an integer; using {priority}")
        return (str(name) if name is not None else "default"), tbt, priority


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("llmsched: %s (further such warnings suppressed)", message)


class PrefixLookup(Protocol):
    """The prefix cache as the view asks it (`prefix.PrefixLookup` over vLLM's KV cache manager)."""

    def lookup(self, req: Any) -> tuple[int, int]:
        """(tokens vLLM would reuse if `req` were admitted now, how many of those blocks running requests hold)."""
        ...

    def exclusive_blocks(self, req: Any) -> int:
        """Blocks `req` holds that no other request holds."""
        ...


class RequestView:
    """One vLLM `Request` seen through the attributes `policies.interface` names. One object per request for its
    lifetime, so policies may keep it in lists and sets.

    `is_decoding` is a plain attribute, as in the simulator's `Request`, because policies read it for every
    running request at every step: the scheduler calls `refresh()` when the phase can change (after a step that
    scheduled a prefill chunk, at admission, at preemption). A request is decoding once its whole prompt (and
    recompute) is scheduled: its next step computes one token, whether its last chunk's output is still in
    flight (async scheduling: an output placeholder) or not."""

    __slots__ = ("req", "id", "arrival", "prompt_len", "tier", "tbt", "priority", "block_size", "is_decoding")

    def __init__(self, req: Any, seq: int, tiers: TierTable, block_size: int, request_priority: bool = False) -> None:
        """`request_priority`: take vLLM's request priority as the tier's (the engine schedules by priority)."""
        self.req = req
        self.id = seq  # an int in arrival order: policies compare ids in heap and sort keys
        self.arrival = req.arrival_time
        self.prompt_len = req.num_prompt_tokens
        params = req.sampling_params
        extra = params.extra_args if params is not None else None
        self.tier, self.tbt, self.priority = tiers.resolve(extra, req.priority if request_priority else None)
        self.block_size = block_size
        self.refresh()

    def refresh(self) -> None:
        r = self.req
        self.is_decoding = self._left <= 1 and (r.num_output_tokens > 0 or r.num_computed_tokens >= r.num_tokens)

    @property
    def _left(self) -> int:
        r = self.req
        return r.num_tokens_with_spec + r.num_output_placeholders - r.num_computed_tokens

    @property
    def computed(self) -> int:
        return self.req.num_computed_tokens

    @property
    def generated(self) -> int:
        return self.req.num_output_tokens

    @property
    def num_prompt(self) -> int:
        """Tokens to prefill: the prompt, plus the tokens generated before a preemption (recompute). Fixed while the
        request waits (shortest-prompt-first orders sort on it)."""
        return self.req.num_computed_tokens if self.is_decoding else self.req.num_tokens

    @property
    def prefilled(self) -> int:
        return self.req.num_computed_tokens

    @property
    def remaining_prefill(self) -> int:
        """Tokens left to prefill (a waiting request's cached prefix included: the view's `prefix_hit` has it)."""
        return 0 if self.is_decoding else self._left

    @property
    def held_blocks(self) -> int:
        """Blocks vLLM has allocated (it allocates for computed tokens)."""
        return blocks_for(self.req.num_computed_tokens, self.block_size)

    @property
    def blocks(self) -> int:
        """Blocks as a whole-prompt-reserving engine would hold them: a running prefill holds its prompt's."""
        if self.is_decoding:  # held_blocks, inlined: policies read this for every decode at every step
            return -(-self.req.num_computed_tokens // self.block_size)
        if self.req.num_computed_tokens == 0 and self.req.status.name != "RUNNING":
            return 0
        return blocks_for(self.req.num_tokens, self.block_size)

    @property
    def finished(self) -> bool:
        return self.req.status > _PREEMPTED  # vLLM's RequestStatus.is_finished, without two calls

    def __repr__(self) -> str:
        return f"RequestView({self.req.request_id!r}, id={self.id})"


def vllm_priority_order(r: RequestView) -> tuple:
    """vLLM's waiting order under `--scheduling-policy priority` (its `Request.__lt__`): priority, then arrival."""
    return (r.priority, r.arrival)


class RunningViews(Sequence[RequestView]):
    """vLLM's running list seen as RequestViews, mapped on first use: `len()` (all a BatchBuilder needs) costs
    nothing, and a policy that never iterates the running requests (SLAI) never pays for mapping them."""

    def __init__(self, requests: list[Any], view_of: Callable[[Any], RequestView]) -> None:
        self._requests, self._view_of = requests, view_of
        self._views: list[RequestView] | None = None

    def _all(self) -> list[RequestView]:
        if self._views is None:
            self._views = [self._view_of(r) for r in self._requests]
        return self._views

    def __len__(self) -> int:
        return len(self._requests)

    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __iter__(self) -> Iterator[RequestView]:
        return iter(self._all())


class VLLMView:
    """An `EngineView` over a vLLM scheduler. The scheduler keeps one and moves it to each step with `at()`
    (the simulated engine is likewise one long-lived view of itself): the limits are set once."""

    __slots__ = ("clock", "running", "waiting", "free_blocks", "total_blocks", "block_size", "watermark_blocks",
                 "token_budget", "max_num_seqs", "max_model_len", "_by", "_sorted", "_cache",
                 "enable_prefix_caching")  # fmt: skip

    def __init__(
        self,
        clock: float,
        running: Sequence[RequestView],
        waiting: Sequence[RequestView],
        free_blocks: int,
        total_blocks: int,
        block_size: int,
        watermark: float,
        token_budget: int,
        max_num_seqs: int,
        max_model_len: int,
        by: Callable[[OrderKey], Sequence[RequestView]] | None = None,
        prefilling: Iterable[RequestView] | None = None,
        cache: PrefixLookup | None = None,
    ) -> None:
        """`cache`: vLLM's prefix cache (None: the engine runs without prefix caching)."""
        self._cache = cache
        self.enable_prefix_caching = cache is not None
        self.total_blocks = total_blocks
        self.block_size = block_size
        self.watermark_blocks = int(watermark * total_blocks)
        self.token_budget = token_budget
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self._by = by
        self._sorted: dict[OrderKey, list[RequestView]] = {}
        self.at(clock, running, waiting, free_blocks, prefilling)

    def at(
        self,
        clock: float,
        running: Sequence[RequestView],
        waiting: Sequence[RequestView],
        free_blocks: int,
        prefilling: Iterable[RequestView] | None = None,
    ) -> VLLMView:
        """This view at another moment. `prefilling`: the running requests still in prefill, when the caller
        tracks them (else found in `running`); `free_blocks` is vLLM's count less the blocks those are still
        owed."""
        self.clock = clock
        self.running = running
        self.waiting = waiting
        if prefilling is None:
            prefilling = (r for r in running if not r.is_decoding)
        owed = sum(r.blocks - r.held_blocks for r in prefilling)
        self.free_blocks = max(0, free_blocks - owed) if owed else free_blocks
        if self._sorted:
            self._sorted = {}
        return self

    def waiting_by(self, key: OrderKey) -> Sequence[RequestView]:
        if self._by is not None:  # the scheduler's incrementally sorted queue
            return self._by(key)
        if key not in self._sorted:
            self._sorted[key] = sorted(self.waiting, key=lambda r: (*key(r), r.id))
        return self._sorted[key]

    def prefix_hit(self, r: RequestView) -> PrefixHit:
        if self._cache is None or r.req.num_computed_tokens:
            return NO_HIT
        return PrefixHit(*self._cache.lookup(r.req))

    def cached_prefix(self, r: RequestView) -> int:
        return self.prefix_hit(r).tokens

    def exclusive_blocks(self, r: RequestView) -> int:
        """What preempting running request `r` frees in this view: its blocks no other request holds, and the blocks
        of its prompt it is still owed (the view took them off `free_blocks`)."""
        owed = r.blocks - r.held_blocks
        return owed + (self._cache.exclusive_blocks(r.req) if self._cache is not None else r.held_blocks)

    def waiting_by_cache(self, key: CacheKey) -> Sequence[RequestView]:
        return sorted_by_cache(self, key)
