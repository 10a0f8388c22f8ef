"""What an engine run produces, written by both engines (the simulator and the vLLM replay) and read by
`metrics`: the requests with their token times, and the batch log."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmsched.workload.request import Request


@dataclass
class BatchLog:
    start: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    prefill_tokens: list[int] = field(default_factory=list)
    prefills: list[int] = field(default_factory=list)
    decodes: list[int] = field(default_factory=list)
    kv_blocks_used: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    replica: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class RunResult:
    requests: list[Request]
    batches: BatchLog
    num_blocks: int
    end_time: float
