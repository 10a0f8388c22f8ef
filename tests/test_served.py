"""The served-cluster forecast (studies.served) and the replay client's TTFT split, without a live app."""

import copy

import pytest

from llmsched.integrations.ray_serve.client import SPLITS, split_ttft
from llmsched.perf.base import BatchShape
from llmsched.perf.measured import StepFitted
from llmsched.studies.served import Forecast, ServedCluster, decode_capacity, fit_probe
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request

PERF = perf_model(RunSpec())
REPLICAS = ({"kv_blocks": 400, "token_budget": 512, "max_num_seqs": 8},) * 2


def requests(n: int = 30) -> list[Request]:
    return [Request(i, 0.2 * i, 64 + 7 * i, 20) for i in range(n)]


def test_split_adds_up_to_the_client_ttft():
    times = {"arrived": 1.0, "queued": 1.01, "scheduled": 1.2, "engine_first_token": 1.3, "first_token": 1.32}
    parts = split_ttft(0.9, 1.4, times)
    assert set(parts) == set(SPLITS)
    assert parts["path"] + parts["replica"] == pytest.approx(1.4 - 0.9)
    inner = parts["to_engine"] + parts["queue"] + parts["prefill"] + parts["from_engine"]
    assert inner == pytest.approx(parts["replica"])
    assert set(split_ttft(0.9, 1.4, {"arrived": 1.0, "first_token": 1.32})) == {"path", "replica"}


def test_the_cluster_stamps_every_token_later_by_the_latency_and_leaves_requests_alone():
    cluster = ServedCluster(REPLICAS, (100.0, 50.0), "slai", 4096, seed=1)
    reqs = requests()
    before = copy.deepcopy(reqs)
    plain = cluster.simulate(reqs, "round-robin", [PERF, PERF])
    late = cluster.simulate(reqs, "round-robin", [PERF, PERF], latency=0.25)
    assert [r.token_times for r in reqs] == [r.token_times for r in before]
    for a, b in zip(plain.requests, late.requests, strict=True):
        assert b.token_times == pytest.approx([t + 0.25 for t in a.token_times])
    assert [s["requests"] for s in plain.replica_summary()] == [15, 15]


def test_a_probe_fit_recovers_the_step_model_and_the_latency():
    cluster = ServedCluster(REPLICAS, (100.0, 100.0), "sarathi", 4096)
    truth = StepFitted(PERF, 1.5, 0.003)
    shapes = [BatchShape.of([(k, 0)], [300] * d) for k in (0, 64, 256) for d in (1, 4, 8) if k or d]
    probe = requests()
    served = cluster.simulate(probe, "round-robin", [truth, truth], latency=0.05).requests
    end = max(r.token_times[-1] for r in served)
    split = dict.fromkeys(SPLITS, None) | {"path": 30.0, "from_engine": 20.0}
    fit = fit_probe(cluster, PERF, probe, served, end, split, [(truth.batch_time(s), s) for s in shapes], "round-robin")
    assert fit.model.compute == pytest.approx(1.5) and fit.model.per_seq == pytest.approx(0.003)
    assert fit.latency == pytest.approx(0.05)
    assert abs(fit.unexplained) < 1e-3  # the served run is the model's own run
    both = Forecast.of([fit, fit])
    assert both.model.compute == pytest.approx(1.5) and both.latency == pytest.approx(0.05)


def test_decode_capacity_is_tokens_over_the_batch_time():
    t = PERF.batch_time(BatchShape.of([], [256] * 8))
    assert decode_capacity(PERF, 8, 256) == pytest.approx(8 / t)
