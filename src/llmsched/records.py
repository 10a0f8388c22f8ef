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
    block_size: int = 16
    prefix_caching: bool = False  # the engine reused cached prompt blocks (each request's `cached_tokens`)


@dataclass(frozen=True)
class StepRecord:
    """One step of a real engine: when it started (the scheduler was entered), when it ended (its tokens were
    returned), and the tokens it gave each request, by request id. Where an llmsched policy planned the step inside
    the engine, `clock` holds the times that policy was given: the clock it planned at and the end `on_batch_done`
    reported; a policy whose decisions read the clock (SLAI's deadlines) replays exactly only on these."""

    start: float
    end: float
    scheduled: dict[int, int]
    clock: tuple[float, float] | None = None


@dataclass
class EngineLog:
    """A real engine's run as the simulator needs it to replay the run (`sim.replay`): the requests (arrival, lengths,
    SLO, and their token times as measured), when the engine received each one (the replay loop adds a request
    between steps, so at or after its arrival), every step, and the engine's settings."""

    policy: str
    requests: list[Request]
    received: dict[int, float]
    steps: list[StepRecord]
    num_blocks: int
    block_size: int
    token_budget: int
    max_num_seqs: int
    max_model_len: int

    _GIVEN = ("id", "arrival", "prompt_len", "decode_len", "tier", "tbt", "priority")  # a request's workload
    _OUTCOME = ("state", "reason", "generated", "preemptions", "token_times")  # and how the run served it

    def to_json(self) -> dict:
        settings = ("num_blocks", "block_size", "token_budget", "max_num_seqs", "max_model_len")
        return {
            "policy": self.policy,
            "engine": {k: getattr(self, k) for k in settings},
            "requests": [
                {f: getattr(r, f) for f in self._GIVEN + self._OUTCOME} | {"received": self.received.get(r.id)}
                for r in self.requests
            ],
            "steps": [
                [s.start, s.end, [[i, n] for i, n in s.scheduled.items()]] + ([list(s.clock)] if s.clock else [])
                for s in self.steps
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> EngineLog:
        requests, received = [], {}
        for d in data["requests"]:
            r = Request(**{f: d[f] for f in cls._GIVEN})
            for f in cls._OUTCOME:
                setattr(r, f, d[f])
            requests.append(r)
            if d["received"] is not None:
                received[r.id] = d["received"]
        steps = [
            StepRecord(s, e, {int(i): int(n) for i, n in sched}, (clock[0][0], clock[0][1]) if clock else None)
            for s, e, sched, *clock in data["steps"]
        ]
        return cls(data["policy"], requests, received, steps, **data["engine"])
