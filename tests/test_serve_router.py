"""The Ray Serve request router adapter, driven directly (no Ray cluster): it must make the same choices as the
simulator's router for the same calls, book at choice time, settle on completion, and follow replica churn."""

import asyncio

import pytest

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install 'llmsched[serve]')")

from ray.serve._private.common import DeploymentHandleSource, DeploymentID, ReplicaID, RequestMetadata  # noqa: E402
from ray.serve.request_router import PendingRequest  # noqa: E402

from llmsched.errors import UserError  # noqa: E402
from llmsched.integrations.ray_serve.router import ROUTER_BLOCK, LlmschedRouter  # noqa: E402
from llmsched.routers import make_router  # noqa: E402
from llmsched.workload.prefix import token_block_ids  # noqa: E402

DEPLOYMENT = DeploymentID("llm", "app")


class FakeReplica:
    def __init__(self, uid, tokens_per_s=None):
        self.replica_id = ReplicaID(uid, DEPLOYMENT)
        self.routing_stats = {"tokens_per_s": tokens_per_s} if tokens_per_s else {}


def pending(key, prompt, decode):
    meta = RequestMetadata(request_id=key, internal_request_id=key)
    kwargs = {"prompt_token_ids": [7] * prompt, "max_tokens": decode}
    return PendingRequest(args=[], kwargs=kwargs, metadata=meta, future=None)  # the router never reads the future


def adapter(name, **kw):
    r = LlmschedRouter(DEPLOYMENT, DeploymentHandleSource.UNKNOWN)
    r.initialize_state(router=name, **kw)
    return r


def choose(r, replicas, key, prompt, decode):
    ranks = asyncio.run(r.choose_replicas(replicas, pending(key, prompt, decode)))
    assert len(ranks) == 1 and len(ranks[0]) == 1  # one replica, one rank: Serve cannot pick another
    return ranks[0][0].replica_id.unique_id


JOBS = [(10 + 37 * i % 300, 1 + 13 * i % 50) for i in range(60)]


@pytest.mark.parametrize("name", ["round-robin", "jsq", "least-work", "power-of-two", "resource-aware"])
def test_same_choices_as_the_simulators_router(name):
    """A burst with completions in between: the adapter's choices are the simulator router's, call for call."""
    caps = [3000.0, 1000.0, 2000.0]
    replicas = [FakeReplica(u, c) for u, c in zip("abc", caps, strict=True)]
    r, sim = adapter(name, seed=5), make_router(name, caps, seed=5)
    for i, (p, d) in enumerate(JOBS):
        got = choose(r, replicas, str(i), p, d)
        assert got == "abc"[sim.route(str(i), p, d)]
        if i % 3 == 2:  # a completion, reported by Serve
            done = str(i - 2)
            r.on_request_completed(ReplicaID(r._booked[done][0].unique_id, DEPLOYMENT), done)
            sim.settle(done)


def test_a_burst_is_spread_before_any_completion():
    """Bookings at choice time: with no completion and no fresh stats, least-work still alternates."""
    r = adapter("least-work")
    replicas = [FakeReplica("a"), FakeReplica("b")]
    picks = [choose(r, replicas, str(i), 100, 10) for i in range(10)]
    assert picks.count("a") == picks.count("b") == 5
    snap = r.snapshot()
    assert {k: v["booked_requests"] for k, v in snap["replicas"].items()} == {"a": 5, "b": 5}
    for i, rid in enumerate(picks):
        r.on_request_routed(pending(str(i), 100, 10), ReplicaID(rid, DEPLOYMENT), None)
        r.on_request_completed(ReplicaID(rid, DEPLOYMENT), str(i))
    snap = r.snapshot()
    assert all(v["booked_requests"] == 0 and v["booked_prompt_tokens"] == 0 for v in snap["replicas"].values())
    assert snap["chosen"] == snap["routed"] == snap["completed"] == {"a": 5, "b": 5}


def test_resource_aware_follows_reported_capacity():
    r = adapter("resource-aware")
    replicas = [FakeReplica("fast", 2000.0), FakeReplica("slow", 1000.0)]
    picks = [choose(r, replicas, str(i), 50, 50) for i in range(300)]
    assert picks.count("fast") == pytest.approx(200, abs=2)
    # an unreported replica counts as the mean of the reported ones, not as 1 token/s
    r2 = adapter("resource-aware")
    assert {choose(r2, [FakeReplica("x", 500.0), FakeReplica("y")], str(i), 10, 10) for i in range(4)} == {"x", "y"}


def test_replica_churn_keeps_bookings_of_survivors_and_retries_rebook():
    r = adapter("jsq")
    a, b, c = FakeReplica("a"), FakeReplica("b"), FakeReplica("c")
    first = [choose(r, [a, b], str(i), 10, 10) for i in range(4)]
    assert first == ["a", "b", "a", "b"]
    # b died, c replaced it: a keeps its two bookings, so jsq fills c first
    assert [choose(r, [a, c], f"n{i}", 10, 10) for i in range(3)] == ["c", "c", "a"]
    # the same request asked again (its replica refused or died) is settled, then booked afresh
    assert choose(r, [a, c], "n2", 10, 10) == "a"
    assert r.snapshot()["replicas"]["a"]["booked_requests"] == 3
    # routed elsewhere than chosen: the booking moves
    r.on_request_routed(pending("n2", 10, 10), c.replica_id, None)
    loads = {k: v["booked_requests"] for k, v in r.snapshot()["replicas"].items()}
    assert loads == {"a": 2, "c": 3} and r.snapshot()["moved"] == 1


def test_unknown_router_is_a_user_error():
    with pytest.raises(UserError, match="--router"):
        adapter("fastest")


def test_calls_without_token_kwargs_route_as_empty_requests():
    r = adapter("least-work")
    meta = RequestMetadata(request_id="s", internal_request_id="s")
    ranks = asyncio.run(r.choose_replicas([FakeReplica("a")], PendingRequest([], {}, meta, future=None)))
    assert ranks[0][0].replica_id.unique_id == "a"
    assert asyncio.run(r.choose_replicas([], None)) == []


def pending_tokens(key, tokens, decode):
    meta = RequestMetadata(request_id=key, internal_request_id=key)
    kwargs = {"prompt_token_ids": list(tokens), "max_tokens": decode}
    return PendingRequest(args=[], kwargs=kwargs, metadata=meta, future=None)


@pytest.mark.parametrize("name", ["prefix-affinity", "cache-aware", "prefix-score"])
def test_prefix_routers_key_by_the_prompts_tokens(name):
    """Four conversations of growing prompts: the adapter's choices are the simulator router's fed the prompts'
    block ids, and prefix-affinity keeps each conversation on one replica after its first turn."""
    replicas = [FakeReplica("a"), FakeReplica("b")]
    r, sim = adapter(name, seed=5), make_router(name, [1.0, 1.0], seed=5)
    where: dict[int, set[str]] = {c: set() for c in range(4)}
    for i in range(24):
        c, turn = i % 4, i // 4
        tokens = list(range(c * 10_000, c * 10_000 + 200 + 40 * turn))
        ranks = asyncio.run(r.choose_replicas(replicas, pending_tokens(str(i), tokens, 8)))
        got = ranks[0][0].replica_id.unique_id
        assert got == "ab"[sim.route(str(i), len(tokens), 8, token_block_ids(tokens, ROUTER_BLOCK), ROUTER_BLOCK)]
        if turn:
            where[c].add(got)
    if name == "prefix-affinity":
        assert all(len(w) == 1 for w in where.values()) and set().union(*where.values()) == {"a", "b"}
