"""`llmsched plan`: the configurations it considers, its sanity checks (capacities within the theory's bounds, the
pruned search agrees with a brute force, a hand-known answer), determinism across worker counts, a target no
configuration meets, and the command's outputs. Runs use short random requests (2,000 per run: the queue-growth
test resolves about 2% above capacity from there, docs/capacity.md)."""

import json
from dataclasses import replace

import pytest

from llmsched.cli import main
from llmsched.report.plan import plan_json, plan_text
from llmsched.studies.executor import Executor
from llmsched.studies.plan import (
    NO_ROUTER,
    Config,
    Space,
    configurations,
    deploy_commands,
    make_plan,
    parse_gpus,
    replica_bound,
)
from llmsched.studies.slo import PAPER_SLO, parse_slo
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig

SLO = parse_slo(PAPER_SLO)
MODEL, GPU = "llama-3.1-8b", "l40s"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("plan") / "trace.csv"
    rows = [f"{p},{d}" for p, d in zip(rng.integers(50, 400, 2000), rng.integers(2, 60, 2000), strict=True)]
    path.write_text("num_prefill_tokens,num_decode_tokens\n" + "\n".join(rows) + "\n")
    return RunSpec(workload=WorkloadConfig(trace=str(path), num_requests=2000, qps=1.0))


def one_replica_bound(base: RunSpec) -> float:
    return replica_bound(base, MODEL, GPU, 1, 512, 128)


def small_space(**kw) -> Space:
    args = dict(models=(MODEL,), gpus=parse_gpus(f"{GPU}:1.0"), tps=(1, 2), max_gpus=2, policies=("sarathi",),
                routers=("round-robin",))  # fmt: skip
    return Space(**{**args, **kw})


def test_configurations_follow_vllm_rules_and_limits():
    space = Space(models=("qwen2.5-32b", "llama-3.1-70b"), gpus=parse_gpus("a10g,h100-80gb"), tps=(1, 2, 4, 8),
                  max_gpus=8, policies=("sarathi", "slai"), routers=("jsq", "round-robin"))  # fmt: skip
    configs, skipped = configurations(space)
    assert all(c.gpus <= 8 for c in configs)
    assert all(c.router == NO_ROUTER for c in configs if c.replicas == 1)
    assert all(c.router != NO_ROUTER for c in configs if c.replicas > 1)
    assert not any(c.model == "llama-3.1-70b" and c.gpu == "h100-80gb" and c.tp == 1 for c in configs)  # 141 GB
    why = {s.what: s.reason for s in skipped}
    assert "llama-3.1-70b on 1 x a10g" in why and "does not fit" in why["llama-3.1-70b on 1 x a10g"]
    assert "needs 16 GPUs" not in str(why)  # TP 16 was not asked for
    # 8 GPUs of one kind: 1 x TP8, 1..2 x TP4, 1..4 x TP2, 1..8 x TP1, each with 2 routers past one replica
    h100_70b = [c for c in configs if c.model == "llama-3.1-70b" and c.gpu == "h100-80gb" and c.policy == "slai"]
    assert len(h100_70b) == (1 + 1 * 2) + (1 + 3 * 2) + 1  # TP 2 (1-4 replicas), TP 4 (1-2), TP 8 (1)
    assert len(set(configs)) == len(configs)


def test_pruned_plan_agrees_with_brute_force_and_bounds_hold(base):
    """Every capacity found is at most its stability bound (the brute force runs at the bound and above, so its
    searches check the theory); the pruned plan's answer and its cheapest capacity per dollar are the brute force's;
    and the pruned plan simulates fewer configurations."""
    target = 0.8 * one_replica_bound(base)
    space = small_space()
    with Executor("process", 1) as ex:
        pruned = make_plan(space, base, target, SLO, ex, short_requests=500, granularity=0.1, progress=False,
                           frontier_cost=10)  # fmt: skip
        brute = make_plan(space, base, target, SLO, ex, granularity=0.1, progress=False, prune=False)
    for plan in (pruned, brute):
        searched = [e for e in plan.configs if e.capacity is not None]
        assert searched and all(e.capacity <= e.bound * (1 + 1e-9) for e in searched), [
            (str(e.config), e.capacity, e.bound) for e in searched
        ]
    p, b = pruned.models[0], brute.models[0]
    assert p.answer is not None and b.answer is not None
    assert p.answer.config == b.answer.config
    per_qps = [min(m.frontier, key=lambda e: e.cost / e.capacity).config for m in (p, b)]
    assert per_qps[0] == per_qps[1], [(str(e.config), e.capacity) for m in (p, b) for e in m.frontier]
    assert [e.config for e in p.frontier] == [e.config for e in b.frontier]
    simulated = sum(e.simulated for e in p.configs)
    assert simulated < len(b.configs)


def test_plan_finds_the_hand_known_answer_and_is_worker_independent(base):
    """One GPU type at a linear price, one replica per GPU: a target 1.2 x one replica's stability bound is out of
    one GPU's reach (left out without a run) and well within two GPUs' (their bound is 1.67 x the target), so the
    answer is two GPUs, round-robin, at twice the price. The plan is the same with one worker and with two."""
    target = 1.2 * one_replica_bound(base)
    space = small_space(tps=(1,), max_gpus=3)
    plans = []
    for workers in (1, 2):
        with Executor("process", workers) as ex:
            plans.append(make_plan(space, base, target, SLO, ex, short_requests=500, granularity=0.1,
                                   progress=False))  # fmt: skip
    m = plans[0].models[0]
    assert m.answer is not None
    assert m.answer.config == Config(MODEL, GPU, 1, 2, "sarathi", "round-robin", 512, 128)
    assert m.answer.cost == pytest.approx(2.0) and m.margin > 0
    one = next(e for e in m.configs if e.config.replicas == 1)
    assert one.at_target is None and one.skipped.startswith("bound")
    assert json.dumps(plan_json(plans[0], space), sort_keys=True) == json.dumps(plan_json(plans[1], space),
                                                                                 sort_keys=True)  # fmt: skip


def test_unmet_target_reports_the_closest_miss(base, tmp_path, capsys):
    """Beyond every configuration's bound: nothing is run at the target, the answer is none, and the closest miss
    (the most capacity found) is reported with its share of the target; the outputs are all written."""
    target = 2.5 * one_replica_bound(base)
    args = ["plan", "--qps", f"{target:.4f}", "--trace", base.workload.trace, "--gpus", f"{GPU}:1", "--tp", "1",
            "--max-gpus", "2", "--policies", "sarathi", "--routers", "jsq", "--granularity", "0.1",
            "--workers", "1", "--out", str(tmp_path / "plan"), "--json"]  # fmt: skip
    main(args)
    out = json.loads(capsys.readouterr().out)
    m = out["models"][MODEL]
    assert m["answer"] is None and m["left_out_by_bound"] == 2
    miss = m["closest_miss"]
    assert miss["replicas"] == 2 and 0 < miss["of_target"] < 1 and miss["batch_times"] == "estimated"
    assert all(row["batch_times"] == "estimated" for row in m["frontier"])
    for name in ("plan.json", "configurations.csv", "frontier.csv", "frontier.png", "report.html"):
        assert (tmp_path / "plan" / name).stat().st_size > 0
    assert "estimated" in (tmp_path / "plan" / "report.html").read_text()


def test_text_names_answer_deploy_line_and_labels(base):
    target = 0.8 * one_replica_bound(base)
    space = small_space(tps=(1,), max_gpus=1)
    with Executor("process", 1) as ex:
        plan = make_plan(space, base, target, SLO, ex, short_requests=500, granularity=0.2, progress=False)
    text = plan_text(plan, space)
    assert "cheapest: llama-3.1-8b on 1 l40s, sarathi" in text and "batch times estimated" in text
    assert "vllm serve meta-llama/Llama-3.1-8B --tensor-parallel-size 1 --max-num-batched-tokens 512" in text
    assert "llmsched serve --model DIR --replicas 1" in text


def test_deploy_commands_follow_the_configuration():
    c = Config("llama-3.1-70b", "h100-80gb", 4, 3, "slai", "jsq", 1024, 256)
    lines = deploy_commands(c, "meta-llama/Llama-3.1-70B")
    assert "--tensor-parallel-size 4 --max-num-batched-tokens 1024 --max-num-seqs 256" in lines[0]
    assert "SLAIScheduler" in lines[0] and "each of 3 replicas" in lines[0]
    assert not any(line.startswith("llmsched serve") for line in lines)  # llmsched serve: one GPU per replica
    rad = deploy_commands(replace(c, policy="rad", tp=1), "m")
    assert '"policy": "rad"' in rad[0] and any(
        line.startswith("llmsched serve") and "--policy rad " in line for line in rad
    )
    sized = deploy_commands(replace(c, policy="deadline-sized", tp=1), "m")  # llmsched serve runs every policy
    assert any("--policy deadline-sized --perf-model PROFILE.csv" in line for line in sized)


def test_plan_warns_when_runs_are_too_short_for_the_stability_test(base):
    """Runs of 200 requests are too short for the queue-growth test to decide (it needs about 2,000): the plan names
    the configurations whose verdicts rested on it, the rates, and how many requests would decide."""
    short = replace(base, workload=replace(base.workload, num_requests=200))
    target = 0.5 * one_replica_bound(base)
    with Executor("process", 1) as ex:
        plan = make_plan(small_space(tps=(1,), max_gpus=1), short, target, SLO, ex, short_requests=0, granularity=0.2,
                         progress=False)  # fmt: skip
    flagged = [e for e in plan.configs if e.undecided]
    assert flagged and all(p.stability_needs > 200 for e in flagged for p in e.undecided)
    text = plan_text(plan, small_space(tps=(1,), max_gpus=1))
    assert "too short for the stability test to decide" in text
    assert f"{max(p.stability_needs for e in flagged for p in e.undecided):,} requests" in text
    out = plan_json(plan, small_space(tps=(1,), max_gpus=1))
    assert out["stability_undecided"] == [str(e.config) for e in flagged]
