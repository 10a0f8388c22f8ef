"""The served-cluster forecast (studies.served) and the replay client's TTFT split, without a live app."""

import copy
import json

import numpy as np
import pytest

from llmsched.integrations.ray_serve.client import SPLITS, split_ttft
from llmsched.perf.base import BatchShape
from llmsched.perf.measured import StepFitted
from llmsched.studies.served import Forecast, ServedCluster, decode_capacity, fit_probe
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request
from llmsched.workload.request import FINISHED, REJECTED

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


def fake_replica(refuse: set[int] = frozenset()):
    """An httpx transport standing in for the served app: it streams one chunk per generated token, the ids a
    function of the prompt (as `return_token_ids` gives them), and refuses the calls numbered in `refuse`."""
    import httpx

    prompts: list[list[int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompts.append(body["prompt"])
        if len(prompts) - 1 in refuse:
            event = {"error": {"message": "refused", "type": "request_failed", "code": 500}}
            return httpx.Response(200, text=f"data: {json.dumps(event)}\n\ndata: [DONE]\n\n")
        assert body["return_token_ids"] and body["ignore_eos"]
        lines = []
        for j in range(body["max_tokens"]):
            tid = 3 + (sum(body["prompt"]) * 7 + j) % 997
            event = {"choices": [{"index": 0, "text": "", "token_ids": [tid]}], "replica_rank": 0, "num_tokens": 1}
            lines.append(f"data: {json.dumps(event)}\n\n")
        return httpx.Response(200, text="".join(lines) + "data: [DONE]\n\n")

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), prompts


def chat_sessions(n=3, max_answer=None):
    from llmsched.workload.sessions import Sessions, scaled_sessions
    from llmsched.workload.tiers import parse_tiers

    picked = scaled_sessions(n, seed=4, scale=0.2, min_turns=3, max_len=1024, max_answer=max_answer)
    turns = sum(map(len, picked))
    return Sessions(picked, np.zeros(n), np.zeros(turns), parse_tiers(None) * n, prefix_block=128)


@pytest.mark.parametrize("max_answer", [None, 8])
def test_a_served_session_sends_back_the_answer_the_engine_generated(max_answer):
    """answers="generated": turn k+1's prompt is turn k's prompt, the ids the engine generated (at most max_tokens),
    then the recorded conversation's next user message; its prompt_len is what was sent."""
    import asyncio

    from llmsched.integrations.ray_serve.client import run_sessions, session_tokens

    work = chat_sessions()
    client, prompts = fake_replica()
    got = asyncio.run(run_sessions("http://fake", work, 1000, seed=1, max_tokens=max_answer, client=client))
    assert len(got.requests) == work.num_turns and all(r.state == FINISHED for r in got.requests)
    tokens = session_tokens(work, 1000, seed=1)
    sent = {r.id: (r, p) for r, p in zip(got.requests, prompts, strict=True)}
    for i, s in enumerate(work.sessions):
        for k in range(len(s.turns)):
            r, p = sent[s.first_id + k]
            assert len(p) == r.prompt_len and r.decode_len == min(s.turns[k][1], max_answer or 1 << 30)
            if k == 0:
                assert p == tokens[i][: s.turns[0][0]]
                continue
            prev, q = sent[s.first_id + k - 1]
            answer = [3 + (sum(q) * 7 + j) % 997 for j in range(prev.decode_len)]
            new = s.turns[k][0] - s.turns[k - 1][0] - s.turns[k - 1][1]  # template and user message
            assert p == [*q, *answer, *tokens[i][s.turns[k][0] - new : s.turns[k][0]]]


def test_a_refused_turn_ends_its_session_and_is_counted():
    import asyncio

    from llmsched.integrations.ray_serve.client import run_sessions

    work = chat_sessions(n=1)
    client, prompts = fake_replica(refuse={1})
    got = asyncio.run(run_sessions("http://fake", work, 1000, seed=1, client=client))
    assert [r.state for r in got.requests] == [FINISHED, REJECTED] and got.requests[1].reason == "refused"
    assert len(prompts) == 2 < work.num_turns  # the session's later turns are not sent
