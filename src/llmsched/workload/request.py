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
    token_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.num_prompt:
            self.num_prompt = self.prompt_len

    @property
    def remaining_prefill(self) -> int:
        return self.num_prompt - self.prefilled

    @property
    def finished(self) -> bool:
        return self.state == FINISHED
