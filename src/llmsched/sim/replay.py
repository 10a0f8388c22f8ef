"""Replay a real engine's run in the simulator: the same requests, each visible to the engine when the real engine
received it, and every batch run when the real step ran, for as long as it took (its start to its tokens'
return: forward pass, sampling and output processing; the host time between steps is the gap to the next start).

The simulator makes its own decisions at each step (the policy plans from the simulated engine's state, on the
real clock, at the times the real engine gave it where it planned inside the engine) and stamps each token at the
end of the step that made it, as the real engine's replay loop does.
So where the policy, the engine's KV and queue semantics and the token stamping match the real engine's, the replay
gives the real run's token times exactly; a step whose plan differs from what the real engine ran is counted, and
from there the two runs can drift apart. Timing cannot make them differ: every duration is the measured one.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsched.perf.base import BatchShape
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan
from llmsched.records import EngineLog, RunResult
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.workload.request import Request


class _MeasuredStep:
    """The batch-time model of a replay: the measured duration of the step being replayed."""

    name = "measured steps"

    def __init__(self) -> None:
        self.duration = 0.0

    def batch_time(self, shape: BatchShape) -> float:
        return self.duration


class _GivenClock:
    """The replayed policy, told each batch's start and end as the real engine told it (`StepRecord.clock`)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.times = (0.0, 0.0)

    def __getattr__(self, name: str) -> object:
        return getattr(self.policy, name)

    def schedule(self, view: EngineView) -> Plan:
        return self.policy.schedule(view)

    def on_batch_done(self, view: EngineView, plan: Plan, start: float, end: float) -> None:
        self.policy.on_batch_done(view, plan, *self.times)


@dataclass
class Replay:
    result: RunResult
    steps: int  # real steps replayed
    mismatched: int  # steps whose plan gave other requests or token counts than the real step
    first_mismatch: int | None  # the index of the first such step

    @property
    def matched_share(self) -> float:
        return 1 - self.mismatched / self.steps if self.steps else 1.0


def scheduled(plan: Plan) -> dict[int, int]:
    """Tokens per request id of a plan."""
    out = {r.id: n for r, n in plan.prefills}
    out.update((r.id, 1) for r in plan.decodes)
    return out


def replay(log: EngineLog, policy: Policy) -> Replay:
    """Run `policy` on the simulated engine through the real run's steps (`log`); requests are fresh copies."""
    perf = _MeasuredStep()
    cfg = EngineConfig(log.num_blocks, log.token_budget, log.max_num_seqs, log.block_size,
                       max_model_len=log.max_model_len)  # fmt: skip
    told = _GivenClock(policy)
    engine = SimEngine(cfg, told, perf)  # type: ignore[arg-type]
    requests = [Request(r.id, r.arrival, r.prompt_len, r.decode_len, r.tier, r.tbt, r.priority) for r in log.requests]
    pending = sorted((r for r in requests if r.id in log.received), key=lambda r: (log.received[r.id], r.id))
    i, mismatched, first = 0, 0, None
    for k, step in enumerate(log.steps):
        while i < len(pending) and log.received[pending[i].id] <= step.start:
            engine.queue.append(pending[i])
            i += 1
        told.times = step.clock or (step.start, step.end)
        engine.clock = engine.now = told.times[0]
        plan = policy.schedule(engine)
        engine._reject(plan)
        engine._preempt(plan)
        if scheduled(plan) != step.scheduled:
            mismatched += 1
            first = k if first is None else first
        if plan.prefills or plan.decodes:
            perf.duration = step.end - step.start
            engine.now = engine._run_batch(plan, step.start)
    result = engine.finish(requests)
    return Replay(result, len(log.steps), mismatched, first)
