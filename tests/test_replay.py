"""Replaying a run's log in the simulator (sim.replay): a run replays itself exactly, and differences show."""

import copy
import json

import pytest

from llmsched.metrics import summarize
from llmsched.metrics.compare import figure_errors, request_errors
from llmsched.policies import make_policy
from llmsched.records import EngineLog, StepRecord
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.sim.replay import replay, scheduled
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request

PERF = perf_model(RunSpec())


class Recording:
    """A policy wrapper that logs each plan, as a real engine's step log does."""

    def __init__(self, policy):
        self.policy, self.name, self.reserve_max_len = policy, policy.name, policy.reserve_max_len
        self.plans: list[tuple[float, dict]] = []

    def schedule(self, view):
        plan = self.policy.schedule(view)
        self.plans.append((view.clock, scheduled(plan)))
        return plan

    def on_batch_done(self, view, plan, start, end):
        self.policy.on_batch_done(view, plan, start, end)


def run_and_log(policy: str, seed: int = 0) -> EngineLog:
    import numpy as np

    rng = np.random.default_rng(seed)
    reqs = [
        Request(i, float(a), int(p), int(d), "paying" if i % 5 == 0 else "free", 0.1 if i % 5 == 0 else 0.5, i % 5 != 0)
        for i, (a, p, d) in enumerate(zip(np.cumsum(rng.exponential(0.05, 60)), rng.integers(20, 900, 60),
                                          rng.integers(2, 60, 60), strict=True))
    ]  # fmt: skip
    given = copy.deepcopy(reqs)
    cfg = EngineConfig(300, token_budget=256, max_num_seqs=16, max_model_len=2048)
    rec = Recording(make_policy(policy))
    engine = SimEngine(cfg, rec, PERF)
    result = engine.run(reqs)
    b = result.batches
    plans = [p for p in rec.plans if p[1]]
    steps = [StepRecord(s, s + d, sched) for s, d, (_, sched) in zip(b.start, b.duration, plans, strict=True)]
    for g, r in zip(given, result.requests, strict=True):
        g.state, g.token_times, g.generated = r.state, r.token_times, r.generated
    return EngineLog(policy, given, {r.id: r.arrival for r in given}, steps, 300, 16, 256, 16, 2048)


@pytest.mark.parametrize("policy", ["sarathi", "slai", "vllm-v1"])
def test_a_run_replays_itself_exactly(policy):
    log = run_and_log(policy)
    rep = replay(log, make_policy(policy))
    assert rep.mismatched == 0 and rep.steps == len(log.steps) > 50
    real = summarize(type(rep.result)(log.requests, rep.result.batches, 300, 0.0), [])
    assert all(e == 0 for e in figure_errors(real, summarize(rep.result, [])).values())
    errors = request_errors(type(rep.result)(log.requests, rep.result.batches, 300, 0.0), rep.result)
    assert errors["requests_compared"] == 60 and errors["median_abs_ttft_error"] == 0


def test_another_policy_mismatches_and_its_errors_show():
    log = run_and_log("sarathi")
    rep = replay(log, make_policy("sarathi-spf"))  # shortest prompt first: other admissions than the log's
    assert rep.mismatched > 0 and rep.first_mismatch is not None
    errors = request_errors(type(rep.result)(log.requests, rep.result.batches, 300, 0.0), rep.result)
    assert errors["median_abs_ttft_error"] > 0


def test_the_log_survives_json():
    log = run_and_log("slai")
    back = EngineLog.from_json(json.loads(json.dumps(log.to_json())))
    assert back.steps == log.steps and back.received == log.received
    assert [(r.id, r.arrival, r.token_times, r.state) for r in back.requests] == [
        (r.id, r.arrival, r.token_times, r.state) for r in log.requests
    ]


def test_a_policy_replays_on_the_clock_the_engine_gave_it():
    """A real engine returns a step's tokens after it told the policy the step ended (output processing between),
    so SLAI's deadlines were set on the policy's times, not the step's: the replay gives the policy those."""
    log = run_and_log("slai")
    host = 0.02  # output processing after on_batch_done, per step
    told = copy.deepcopy(log)
    told.steps = [StepRecord(s.start, s.end + host, s.scheduled, (s.start, s.end)) for s in log.steps]
    assert replay(told, make_policy("slai")).mismatched == 0
    untold = copy.deepcopy(log)
    untold.steps = [StepRecord(s.start, s.end + host, s.scheduled) for s in log.steps]
    assert replay(untold, make_policy("slai")).mismatched > 0
    back = EngineLog.from_json(json.loads(json.dumps(told.to_json())))
    assert back.steps == told.steps
