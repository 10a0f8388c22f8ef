"""A request as the engine tracks it; policies read it through the attributes named in `policies.interface`."""

from __future__ import annotations

from dataclasses import dataclass, field

WAITING, RUNNING, FINISHED, REJECTED, UNFINISHED = "waiting", "running", "finished", "rejected", "unfinished"


@dataclass(slots=True, eq=False)
class Request:
    id: int
    arrival: float
    prompt_len: int
    decode_len: int
    tier: str = "default"
    tbt: float = 0.2  # this request's TBT SLO in seconds
    priority: int = 0  # 0 is served first (paying tier); larger is later
    # The prompt's consecutive blocks of `prefix_block` tokens (the last may be partial), one id each; an id stands
    # for the whole prefix up to and including its block (a prefix hash, as the Mooncake trace's `hash_ids`).
    # Empty: the prompt shares nothing.
    prefix_ids: tuple[int, ...] = ()
    prefix_block: int = 0  # tokens per id (512 in the Mooncake trace)
    # The ids go on over the answer (a chat client sends the answer the engine generated back in its next turn): the
    # full blocks of generated tokens are cacheable too, as vLLM caches them. False: the ids cover the prompt only.
    answer_ids: bool = False
    # Engine state. After a preemption by recompute, the tokens generated so far are prefilled again
    # with the prompt, so `num_prompt` grows beyond `prompt_len`.
    num_prompt: int = 0
    prefilled: int = 0
    generated: int = 0
    computed: int = 0  # tokens whose KV is in the cache
    is_decoding: bool = False  # prefill (or its recompute) done; kept by the engine, read on the hot path
    blocks: int = 0
    state: str = WAITING
    reason: str = ""
    preemptions: int = 0
    cached_tokens: int | None = None  # prompt tokens served from the prefix cache at first admission (None: never)
    # of the rest, those loaded from a CPU tier at first admission (None: no CPU tier, or never admitted)
    external_cached_tokens: int | None = None
    token_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.num_prompt:
            self.num_prompt = self.prompt_len

    @property
    def id_tokens(self) -> int:
        """Tokens the prefix ids may name: the prompt, and with `answer_ids` the answer too."""
        return self.prompt_len + self.decode_len if self.answer_ids else self.prompt_len

    @property
    def remaining_prefill(self) -> int:
        return self.num_prompt - self.prefilled

    @property
    def finished(self) -> bool:
        return self.state == FINISHED
