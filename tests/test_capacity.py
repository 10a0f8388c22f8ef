import json
from dataclasses import replace

import pytest

import llmsched.studies.capacity as capacity
from llmsched.cli import main
from llmsched.errors import UserError
from llmsched.report.text import capacity_flags, undecided_warning
from llmsched.studies.capacity import Point, search
from llmsched.studies.executor import Executor
from llmsched.studies.slo import P99_TTFT_FACTOR, PAPER_SLO, UNFINISHED_SHARE, out_of_line, parse_slo
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig


def run_cli(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_slo_asks_for_a_stable_queue_unless_it_opts_out():
    assert parse_slo(None).stable and parse_slo(PAPER_SLO).stable and parse_slo("ttft_p50<=1").stable
    assert str(parse_slo(PAPER_SLO)) == str(parse_slo(PAPER_SLO + ",stable")) == "ttft_p50<=0.5,itl_p99<=tier,stable"
    opted = parse_slo(PAPER_SLO + ",unstable-ok")
    assert not opted.stable and str(opted) == "ttft_p50<=0.5,itl_p99<=tier,unstable-ok"
    summary = {"completed": 10, "median_ttft_ms": 100.0, "p99_itl_ms": 90.0, "tbt_slo_ms": 200.0}
    assert parse_slo("ttft_p50<=0.5").check(summary, stable=False) == (False, "queue grows")
    assert opted.check(summary, stable=False) == (True, "")
    for bad in ("unstable-ok", "stable,unstable-ok"):
        with pytest.raises(UserError, match="--slo"):
            parse_slo(bad)


def test_opting_out_of_the_stable_queue_warns(capsys, write_trace):
    trace = write_trace([(100 + i, 5) for i in range(40)])
    args = ["capacity", "--policies", "sarathi", "--trace", trace, "--workers", "1", "--max-rounds", "2", "--json"]
    code, out, err = run_cli(capsys, *args, "--slo", "ttft_p50<=0.5,unstable-ok")
    assert code == 0 and "warning: the SLO names unstable-ok" in err
    assert json.loads(out)["slo"] == "ttft_p50<=0.5,unstable-ok"
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "unstable-ok" not in err and json.loads(out)["slo"].endswith(",stable")


def test_slo_parsing_and_checks():
    slo = parse_slo(PAPER_SLO + ",stable")
    assert str(slo) == "ttft_p50<=0.5,itl_p99<=tier,stable"
    tiers = {"paying": {"p99_itl_ms": 90.0, "tbt_slo_ms": 100.0}, "free": {"p99_itl_ms": 600.0, "tbt_slo_ms": 500.0}}
    summary = {"completed": 10, "median_ttft_ms": 400.0, "tiers": tiers}
    ok, why = slo.check(summary, stable=False)
    assert not ok and why == "free: p99_itl_ms 600.0 > 500; queue grows"
    tiers["free"]["p99_itl_ms"] = 499.0
    assert slo.check(summary, stable=True) == (True, "")
    assert parse_slo("e2el_mean<=30").check({"completed": 1, "mean_e2el_ms": 31e3}, True)[0] is False


@pytest.mark.parametrize("spec", ["ttft<=0.5", "ttft_p50<0.5", "ttft_p50<=tier", "ttft_p50<=-1", "", "fast"])
def test_bad_slo(spec):
    with pytest.raises(UserError, match="--slo"):
        parse_slo(spec)


def fake_evaluate(threshold):
    def evaluate(spec, slo):
        q = spec.workload.qps
        return Point(q, q <= threshold, "" if q <= threshold else "too fast", {"policy": spec.policy}, 0.0, True)

    return evaluate


class InlineExecutor:
    """Runs jobs in this process but reports `workers` slots, as the search sizes its rounds by them."""

    def __init__(self, workers):
        self.workers, self.rounds = workers, 0

    def map(self, fn, jobs, progress=None):
        self.rounds += 1
        return [fn(*job) for job in jobs]


@pytest.mark.parametrize("thresholds", [(0.37, 5.3), (1.9, 2.0), (3.3, 0.0), (200.0, 13.04)])
def test_the_rates_searched_do_not_depend_on_the_workers(monkeypatch, thresholds):
    monkeypatch.setattr(
        capacity, "evaluate", lambda spec, slo: fake_evaluate(thresholds[spec.policy == "slai"])(spec, slo)
    )
    specs = [RunSpec(policy="sarathi"), RunSpec(policy="slai")]
    paths, rounds = {}, {}
    for workers in (1, 2, 3, 8, 32):
        ex = InlineExecutor(workers)
        found = search(specs, parse_slo(PAPER_SLO), ex, progress=False)
        paths[workers] = [[(p.qps, p.passed) for p in s.points] for s in found]
        rounds[workers] = ex.rounds
    assert all(path == paths[1] for path in paths.values())
    assert rounds[32] < rounds[2] <= rounds[1]  # spare workers run ahead: fewer rounds, the same answer


@pytest.mark.parametrize("threshold", [0.37, 1.9, 2.0, 5.3])
def test_bisection_finds_the_threshold_within_granularity(monkeypatch, threshold):
    monkeypatch.setattr(capacity, "evaluate", fake_evaluate(threshold))
    with Executor(workers=1) as ex:
        (s,) = search([RunSpec()], parse_slo(PAPER_SLO), ex, granularity=0.025, max_rounds=30, progress=False)
    assert s.capacity <= threshold
    assert s.capacity >= threshold * (1 - 0.03)


def test_no_passing_rate_gives_zero(monkeypatch):
    monkeypatch.setattr(capacity, "evaluate", fake_evaluate(-1))
    with Executor(workers=1) as ex:
        (s,) = search([RunSpec()], parse_slo(PAPER_SLO), ex, max_rounds=8, progress=False)
    assert s.capacity == 0.0


def test_out_of_line_flags():
    slo = parse_slo(PAPER_SLO)
    fine = {"num_requests": 1000, "unfinished": 30, "rejected": 0, "median_ttft_ms": 300.0, "p99_ttft_ms": 4000.0}
    assert out_of_line(fine, slo) == []
    tail = {**fine, "p99_ttft_ms": (P99_TTFT_FACTOR + 1) * 500.0}
    assert out_of_line(tail, slo) == ["p99 TTFT 5.5 s is 11x the SLO's TTFT limit (flagged above 10x)"]
    # without a TTFT term, the tail is compared with the run's own median
    assert len(out_of_line({**fine, "p99_ttft_ms": 3001.0}, parse_slo("tbt_p99<=tier"))) == 1
    # requests that never arrived before the time limit are not counted against the run
    share = int(UNFINISHED_SHARE * 800) + 1
    reasons = {"not arrived before the time limit": 200, "time limit reached": share}
    left = {**fine, "unfinished": 200 + share, "not_completed_reasons": reasons}
    assert out_of_line(left, slo) == [f"{share} of 800 arrived requests (5.1%) not completed (flagged above 5%)"]
    assert out_of_line({**left, "unfinished": 200 + share - 1}, slo) == []


def test_a_flagged_capacity_is_reported(monkeypatch):
    def evaluate(spec, slo):
        q = spec.workload.qps
        summary = {"num_requests": 100, "unfinished": 0, "median_ttft_ms": 400.0, "p99_ttft_ms": 333e3}
        return Point(q, q <= 3.0, "", summary, 0.0, True, tuple(out_of_line(summary, slo)) if q <= 3 else ())

    monkeypatch.setattr(capacity, "evaluate", evaluate)
    (s,) = search([RunSpec(policy="slai")], parse_slo(PAPER_SLO), InlineExecutor(1), progress=False)
    assert capacity_flags(s) == [
        f"slai at {s.capacity:g} QPS: p99 TTFT 333.0 s is 666x the SLO's TTFT limit (flagged above 10x)"
    ]


def test_a_run_too_short_for_the_stability_test_is_said_to_be(monkeypatch):
    # Sarathi on the paper's trace, 1,500 requests at 1.4 QPS: growth 10.1 against the floor's 20, error 8.8
    spec = RunSpec(workload=WorkloadConfig(num_requests=1500, qps=1.4))
    p = capacity.evaluate(spec, parse_slo("stable"))
    assert p.stability_needs is not None and p.stability_needs > 1500
    assert capacity.evaluate(spec, parse_slo("ttft_p50<=0.5,unstable-ok")).stability_needs is None  # verdict unused

    def evaluate(spec, slo):
        q = spec.workload.qps
        return Point(q, q <= 2.4, "" if q <= 2.4 else "queue grows", {}, 0.0, q <= 2.4, (), 4321 if q > 2.3 else None)

    monkeypatch.setattr(capacity, "evaluate", evaluate)
    (s,) = search([replace(spec, time_limit=600.0)], parse_slo(PAPER_SLO), InlineExecutor(1), progress=False)
    lowest = min(p.qps for p in s.undecided)
    assert sorted(p.qps for p in s.undecided) == [q for q in sorted(p.qps for p in s.points) if q > 2.3]
    warning = undecided_warning(s)
    assert "too short for the stability test to decide" in warning and "about 4,321 requests would" in warning
    assert f"--time-limit at least {4321 / lowest:,.0f} s" in warning


def test_real_search_orders_policies(write_trace, capsys):
    trace = write_trace([(200 + 13 * (i % 50), 20 + i % 30) for i in range(400)])
    code = 0
    try:
        main(
            [
                "capacity",
                "--policies",
                "sarathi,fastertransformer",
                "--trace",
                trace,
                "--num-requests",
                "400",
                "--slo",
                "ttft_p50<=0.5",
                "--workers",
                "2",
                "--granularity",
                "0.1",
                "--json",
            ]
        )
    except SystemExit as e:
        code = e.code
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    caps = out["capacity_qps"]
    assert caps["sarathi"] > caps["fastertransformer"] > 0
    assert all(r["passed"] == (r["qps"] <= caps[p]) for p, rs in out["runs"].items() for r in rs if r["passed"])


def test_capacity_json_is_the_same_for_any_worker_count(capsys, random_trace):
    args = ["capacity", "--policies", "sarathi,slai", "--trace", random_trace(300), "--granularity", "0.05", "--json"]
    found = {}
    for workers in ("1", "2", "8"):
        code, out, _ = run_cli(capsys, *args, "--workers", workers)
        assert code == 0
        res = json.loads(out)
        assert res["metadata"].pop("command").endswith(f"--workers {workers}")
        found[workers] = res
    assert found["1"] == found["2"] == found["8"]
    assert found["1"]["capacity_qps"]["sarathi"] > 0


def test_ray_backend_matches_the_process_pool(write_trace):
    pytest.importorskip("ray")
    import ray

    trace = write_trace([(100 + i, 10) for i in range(60)])
    spec = RunSpec(workload=WorkloadConfig(trace=trace, num_requests=60))
    slo = parse_slo("ttft_p50<=0.2")
    jobs = [(spec.at_qps(q), slo) for q in (1.0, 50.0)]
    try:
        with Executor("ray", workers=2) as ex:
            via_ray = ex.map(capacity.evaluate, jobs)
    finally:
        ray.shutdown()
    with Executor(workers=1) as ex:
        inline = ex.map(capacity.evaluate, jobs)
    assert [p.passed for p in via_ray] == [p.passed for p in inline]
    assert [p.summary for p in via_ray] == [p.summary for p in inline]
