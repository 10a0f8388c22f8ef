import numpy as np
import pytest

from llmsched.errors import UserError
from llmsched.workload import WorkloadConfig, build_requests, builtin_trace_path, load_trace, parse_tiers
from llmsched.workload.arrivals import arrival_times
from llmsched.workload.build import resolved_arrival


@pytest.mark.parametrize("name,rows", [("paper", 30_731), ("sharegpt-v3", 17_083)])
def test_builtin_traces_ship_and_are_valid(name, rows):
    trace = load_trace(name)
    assert builtin_trace_path(name).exists()
    assert len(trace) == rows
    assert all(r.prompt_len > 0 and r.decode_len > 0 and r.prompt_len + r.decode_len <= 8192 for r in trace)


def test_default_trace_is_the_papers():
    rows = load_trace(None)
    assert rows == load_trace("paper")
    # the statistics of the paper's trace (reference section 5.1): mean prompt 2340, mean decode 439
    assert np.mean([r.prompt_len for r in rows]) == pytest.approx(2340, abs=1)
    assert np.mean([r.decode_len for r in rows]) == pytest.approx(439, abs=1)


def test_tiers_parse_and_priority_order():
    tiers = parse_tiers("paying:0.05:tbt=0.1,free:0.95:tbt=0.5:ttft=2")
    assert [(t.name, t.share, t.tbt, t.ttft, t.priority) for t in tiers] == [
        ("paying", 0.05, 0.1, None, 0),
        ("free", 0.95, 0.5, 2.0, 1),
    ]
    assert parse_tiers(None)[0].tbt == 0.2
    assert parse_tiers("paper") == parse_tiers("paying:0.05:tbt=0.1,free:0.95:tbt=0.5")


@pytest.mark.parametrize(
    "spec",
    [
        "paying:0.5",
        "a:0.5:tbt=0.1,b:0.4:tbt=0.1",
        "a:x:tbt=0.1",
        "a:1:tbt=-1",
        "a:1:speed=3",
        "a:0.5:tbt=0.1,a:0.5:tbt=0.1",
        "a:1:tbt=nan",
    ],
)
def test_bad_tier_specs(spec):
    with pytest.raises(UserError, match="--tiers"):
        parse_tiers(spec)


@pytest.mark.parametrize(
    "header,rows,match",
    [
        ("num_prefill_tokens", [(5,)], "missing column 'num_decode_tokens'"),
        ("num_prefill_tokens,num_decode_tokens", [(5, "x")], "line 2: num_decode_tokens is 'x'"),
        ("num_prefill_tokens,num_decode_tokens", [(5, 3), (0, 3)], "line 3: num_prefill_tokens is '0'"),
        ("num_prefill_tokens,num_decode_tokens", [(-4, 3)], "positive integer"),
        ("num_prefill_tokens,num_decode_tokens", [], "no requests"),
        ("num_prefill_tokens,num_decode_tokens,arrived_at", [(5, 3, "soon")], "arrived_at is 'soon'"),
    ],
)
def test_bad_traces(write_trace, header, rows, match):
    with pytest.raises(UserError, match=match):
        load_trace(write_trace(rows, header))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(UserError, match="empty file"):
        load_trace(p)


def test_poisson_cap_and_rates():
    capped = np.diff(arrival_times("poisson-capped", 200_000, 2.0, 1), prepend=0.0)
    assert capped.max() <= 1.5 + 1e-12 and capped[0] > 0  # the first request arrives after one gap
    assert capped.mean() == pytest.approx((1 - np.exp(-3)) / 2.0, rel=0.02)
    plain = np.diff(arrival_times("poisson", 200_000, 2.0, 1))
    assert plain.mean() == pytest.approx(0.5, rel=0.02)
    bursty = np.diff(arrival_times("gamma", 200_000, 2.0, 1, burstiness=4.0))
    assert bursty.mean() == pytest.approx(0.5, rel=0.03)
    assert (bursty.std() / bursty.mean()) ** 2 == pytest.approx(4.0, rel=0.1)


def test_trace_replay_and_qps_errors(write_trace):
    path = write_trace([(5, 3, 10.0), (6, 2, 12.5)], "num_prefill_tokens,num_decode_tokens,arrived_at")
    reqs, _ = build_requests(WorkloadConfig(trace=path, arrival="trace"))
    assert [r.arrival for r in reqs] == [0.0, 2.5]
    with pytest.raises(UserError, match="--qps"):
        build_requests(WorkloadConfig(trace=path, qps=0, arrival="poisson"))
    with pytest.raises(UserError, match="arrived_at"):
        build_requests(WorkloadConfig(trace=write_trace([(5, 3)], name="b.csv"), arrival="trace"))


def test_build_is_seeded_and_draws_tiers(write_trace):
    path = write_trace([(i + 1, i + 2) for i in range(100)])
    cfg = WorkloadConfig(trace=path, num_requests=2000, qps=3, tiers="a:0.2:tbt=0.1,b:0.8:tbt=0.5", seed=7)
    a, _ = build_requests(cfg)
    b, _ = build_requests(cfg)
    assert [(r.arrival, r.prompt_len, r.tier) for r in a] == [(r.arrival, r.prompt_len, r.tier) for r in b]
    share = sum(r.tier == "a" for r in a) / len(a)
    assert 0.15 < share < 0.25
    assert all(r.tbt == (0.1 if r.tier == "a" else 0.5) and r.priority == (r.tier == "b") for r in a)


def test_requests_over_the_context_are_rejected_one_by_one(write_trace):
    path = write_trace([(5, 3), (9000, 3), (6, 2), (8190, 3)])
    reqs, _ = build_requests(WorkloadConfig(trace=path, shuffle=False), max_model_len=8192)
    assert [r.state for r in reqs] == ["waiting", "rejected", "waiting", "rejected"]
    assert reqs[1].reason == "prompt + output of 9003 tokens exceeds max_model_len 8192"


def test_arrived_at_is_replayed_by_default(write_trace):
    timed = write_trace([(5, 3, 10.0), (6, 2, 12.5), (7, 2, 20.0)], "num_prefill_tokens,num_decode_tokens,arrived_at")
    reqs, _ = build_requests(WorkloadConfig(trace=timed))
    assert [(r.arrival, r.prompt_len) for r in reqs] == [(0.0, 5), (2.5, 6), (10.0, 7)]  # in the trace's order
    drawn, _ = build_requests(WorkloadConfig(trace=timed, arrival="poisson-capped", qps=2.0))
    assert [r.arrival for r in drawn] != [0.0, 2.5, 10.0] and drawn[0].arrival > 0
    plain = write_trace([(5, 3), (6, 2)], name="plain.csv")
    assert resolved_arrival(WorkloadConfig(trace=plain)) == "poisson-capped"
    assert resolved_arrival(WorkloadConfig(trace=timed)) == "trace"
    assert resolved_arrival(WorkloadConfig()) == "poisson-capped"  # the paper's trace has no arrived_at
