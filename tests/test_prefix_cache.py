"""Prefix caching in the simulated engine: the KV books (hypothesis, every policy), what admission reuses and charges,
the orders that see the cache, and the metrics."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefix_reference import PrefixCache as BlockByBlock

from llmsched.metrics import summarize
from llmsched.perf.base import BatchShape
from llmsched.policies import POLICIES, make_policy
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import Request, WorkloadConfig
from llmsched.workload.request import FINISHED, UNFINISHED

PERF = perf_model(RunSpec())


def conversation_requests(rows, pb, answers=False):
    """Requests of a few conversations: each prompt starts with id 0 (a shared system prompt), then its conversation's
    ids; `k` ids cover `k - 1` full blocks of `pb` tokens and a partial one, plus `tail` tokens no id covers. With
    `answers`, the ids go on over the answer (`Request.answer_ids`), the conversation's ids still: requests of one
    conversation may generate the same blocks, and a later one may hit an earlier one's answer."""
    out, t = [], 0.0
    for i, (gap, conv, k, part, tail, decode) in enumerate(rows):
        t += gap
        prompt = (k - 1) * pb + max(1, min(part, pb)) + (tail if part >= pb else 0)
        n = -(-(prompt + decode) // pb) if answers else k
        ids = (0, *(1000 * conv + j for j in range(1, n)))
        out.append(Request(i, t, prompt, decode, tbt=0.5, prefix_ids=ids, prefix_block=pb, answer_ids=answers))
    return out


rows_st = st.lists(
    st.tuples(
        st.floats(0, 2),
        st.integers(1, 4),
        st.integers(1, 8),
        st.integers(1, 80),
        st.integers(0, 40),
        st.integers(1, 30),
    ),
    min_size=1,
    max_size=30,
)


def simulate(policy, reqs, blocks, bs, budget=256, seqs=8, check=True, cache_cls=None):
    cfg = EngineConfig(
        blocks, token_budget=budget, max_num_seqs=seqs, block_size=bs, max_model_len=1024, enable_prefix_caching=True
    )
    p = make_policy(policy, **({"tile": budget} if policy == "rad" else {}))
    engine = SimEngine(cfg, p, PERF)
    if cache_cls is not None:
        engine.kv = cache_cls(blocks, bs)
    if check:
        done = p.on_batch_done

        def checked(view, plan, start, end):
            engine.kv.check(engine.running)
            done(view, plan, start, end)

        p.on_batch_done = checked
    return engine, engine.run(reqs)


def shared_bound(r, others, bs):
    """The most of r's prompt another request's cacheable blocks could cover: the leading ids they agree on, within
    the other prompt, in whole blocks, never r's last token."""
    best = 0
    for q in others:
        n = 0
        for a, b in zip(r.prefix_ids, q.prefix_ids, strict=False):
            if a != b:
                break
            n += 1
        covered = q.prompt_len + q.decode_len - 1 if q.answer_ids else q.prompt_len  # its computed tokens at most
        best = max(best, min(n * r.prefix_block, covered) // bs * bs)
    return min(best, (r.prompt_len - 1) // bs * bs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st,
    pb=st.sampled_from([8, 16, 24, 64]),
    bs=st.sampled_from([4, 16]),
    blocks=st.integers(30, 200),
    budget=st.sampled_from([64, 256]),
    answers=st.booleans(),
)
def test_every_policy_keeps_the_books(rows, pb, bs, blocks, budget, answers):
    """Per batch (KVCache.check): reference counts are the holders (never negative), no held block is evicted,
    free + held == total. At the end: everything freed or cached; hits within the shared prefix (with answer ids:
    within an earlier request's computed prompt and answer)."""
    reqs = conversation_requests(rows, pb, answers)
    for name in POLICIES:
        engine, result = simulate(name, copy.deepcopy(reqs), blocks * 64 // bs, bs, budget)
        kv = engine.kv
        kv.check(engine.running)
        if all(r.state != UNFINISHED for r in result.requests):
            assert kv.free == kv.total and engine.free_blocks == kv.total, name
            assert 0 <= kv.cached_free <= kv.free, name
        for r in result.requests:
            if r.cached_tokens is not None:
                assert r.cached_tokens % bs == 0, name
                assert r.cached_tokens <= shared_bound(r, [q for q in result.requests if q is not r], bs), name
            if r.state == FINISHED:
                assert r.generated == r.decode_len == len(r.token_times), name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st,
    pb=st.sampled_from([8, 24, 64]),
    bs=st.sampled_from([4, 16]),
    blocks=st.integers(30, 200),
    answers=st.booleans(),
)
def test_run_length_books_equal_block_by_block(rows, pb, bs, blocks, answers):
    """The package's run-length cache and the block-by-block reference give the same run, batch for batch."""
    reqs = conversation_requests(rows, pb, answers)
    for name in ("sarathi", "slai", "slai-lpm", "vllm-v1"):
        a, ra = simulate(name, copy.deepcopy(reqs), blocks * 64 // bs, bs, check=False)
        b, rb = simulate(name, copy.deepcopy(reqs), blocks * 64 // bs, bs, check=False, cache_cls=BlockByBlock)
        assert [(r.state, r.cached_tokens, r.token_times) for r in ra.requests] == [
            (r.state, r.cached_tokens, r.token_times) for r in rb.requests
        ], name
        assert ra.batches.kv_blocks_used == rb.batches.kv_blocks_used, name
        assert a.kv.evicted == b.kv.evicted and a.kv.cached_free == b.kv.cached_free, name


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st,
    pb=st.sampled_from([8, 24, 64]),
    bs=st.sampled_from([4, 16]),
    blocks=st.integers(30, 200),
    answers=st.booleans(),
)
def test_bulk_batches_keep_the_cache_as_batch_by_batch_runs(rows, pb, bs, blocks, answers):
    """With prefix caching, batches run without asking the policy (`Policy.repeats`) leave the requests, the batch log
    and the cache's books as a run that asks it before every batch (with answer ids too: the decodes' takes and
    answer-block caches in the same order)."""
    reqs = conversation_requests(rows, pb, answers)
    n = blocks * 64 // bs
    cfg = EngineConfig(
        n, token_budget=64, max_num_seqs=8, block_size=bs, max_model_len=1024, enable_prefix_caching=True
    )

    def outcome(name: str, ask: bool) -> tuple:
        policy = make_policy(name, **({"tile": 64} if name == "rad" else {}))
        if ask:
            policy.repeats = lambda view: False
            policy.holds = lambda view: None
        engine = SimEngine(cfg, policy, PERF)
        result = engine.run(copy.deepcopy(reqs))
        per_request = [(r.state, r.cached_tokens, r.preemptions, r.token_times) for r in result.requests]
        return per_request, vars(result.batches), engine.kv.evicted, engine.kv.cached_free, engine.kv.free

    for name in POLICIES:
        assert outcome(name, ask=False) == outcome(name, ask=True), name


class Shapes:
    """A batch-time model that records what it is asked."""

    name = "shapes"

    def __init__(self):
        self.shapes: list[BatchShape] = []

    def batch_time(self, shape):
        self.shapes.append(shape)
        return 0.01


def test_reuse_caps_at_the_last_token_and_charges_the_cached_context():
    """Two identical 80-token prompts (5 blocks of 16), the second after the first finished: it reuses 4 blocks (64
    tokens), never the whole prompt, and prefills 16 tokens over a context of 64."""
    perf = Shapes()
    cfg = EngineConfig(100, block_size=16, max_model_len=1024, enable_prefix_caching=True)
    engine = SimEngine(cfg, make_policy("sarathi"), perf)
    ids = (7, 8, 9, 10, 11)
    reqs = [
        Request(0, 0.0, 80, 2, prefix_ids=ids, prefix_block=16),
        Request(1, 5.0, 80, 2, prefix_ids=ids, prefix_block=16),
    ]
    result = engine.run(reqs)
    assert [r.cached_tokens for r in result.requests] == [0, 64]
    second = [s for s in perf.shapes if s.num_prefills][-1]
    assert (second.prefill_tokens, second.prefill_context) == (16, 64)
    assert second.prefill_pairs == 16 * (64 + 17 / 2)
    summary = summarize(result, [])
    assert summary["prefix_cache_queries"] == 160 and summary["prefix_cache_hits"] == 64
    assert summary["prefix_cache_hit_rate"] == pytest.approx(0.4)
    assert summary["prefix_cache_query_blocks"] == 10 and summary["prefix_cache_hit_blocks"] == 4


def answer_turns(answers: bool, decode: int = 30):
    """Turn 0: a 40-token prompt and a `decode`-token answer (bs 16); turn 1, after it: the conversation so far
    (prompt, answer, 1 token) and 10 new tokens. With `answers`, turn 0's ids go on over its answer."""
    n0 = -(-(40 + decode) // 16) if answers else 3
    first = Request(0, 0.0, 40, decode, prefix_ids=tuple(range(n0)), prefix_block=16, answer_ids=answers)
    p1 = 40 + decode + 1 + 10
    second = Request(1, 50.0, p1, 2, prefix_ids=tuple(range(-(-p1 // 16))), prefix_block=16)
    return first, second


@pytest.mark.parametrize("policy", ["sarathi", "slai", "vllm-v1"])
def test_a_next_turn_hits_the_full_blocks_of_the_generated_answer(policy):
    """Turn 0 computes 40 + 30 - 1 = 69 tokens (its last token is never computed): 4 full blocks, the last three
    filled by its decode, are cached, and turn 1 reuses 64 tokens. With the recorded answer (ids over the prompt
    only), it reuses the prompt's 2 full blocks. The partial fifth block is never cached."""
    for answers, hit in ((True, 64), (False, 32)):
        cfg = EngineConfig(100, block_size=16, max_model_len=1024, enable_prefix_caching=True)
        engine = SimEngine(cfg, make_policy(policy), PERF)
        result = engine.run(list(answer_turns(answers)))
        assert [r.cached_tokens for r in result.requests] == [0, hit], (policy, answers)
        engine.kv.check([])


def test_an_answer_ending_on_a_block_boundary_leaves_its_last_block_uncached():
    """40 + 24 = 64 tokens: the fourth block holds the last generated token, never computed, so it is not cached
    (as in vLLM); turn 1 reuses 3 blocks."""
    cfg = EngineConfig(100, block_size=16, max_model_len=1024, enable_prefix_caching=True)
    result = SimEngine(cfg, make_policy("sarathi"), PERF).run(list(answer_turns(True, decode=24)))
    assert [r.cached_tokens for r in result.requests] == [0, 48]


def test_off_means_no_reuse_and_no_counters():
    cfg = EngineConfig(100, block_size=16, max_model_len=1024)
    ids = (7, 8)
    reqs = [Request(i, 5.0 * i, 32, 2, prefix_ids=ids, prefix_block=16) for i in range(2)]
    result = SimEngine(cfg, make_policy("sarathi"), PERF).run(reqs)
    assert [r.cached_tokens for r in result.requests] == [None, None]
    assert "prefix_cache_hits" not in summarize(result, [])


def test_admission_counts_hit_blocks_held_by_running_requests_as_free():
    """A long decode holds a 10-block prefix; the pool has 12 blocks (no watermark). A second request with the same
    prefix and one more block needs 11 blocks, but the 10 held ones cost nothing: it is admitted beside the first,
    and the two hold 12 blocks between them."""
    cfg = EngineConfig(12, block_size=16, watermark=0.0, max_model_len=1024, enable_prefix_caching=True)
    engine = SimEngine(cfg, make_policy("sarathi"), Shapes())
    ids = tuple(range(11))
    a = Request(0, 0.0, 161, 10, prefix_ids=ids[:10] + (99,), prefix_block=16)  # 11 blocks to its end
    b = Request(1, 0.05, 170, 2, prefix_ids=ids, prefix_block=16)
    engine.run([a, b])
    assert b.cached_tokens == 160 and b.token_times[0] < a.token_times[-1]  # admitted while a still decodes
    assert max(engine.log.kv_blocks_used) == 12


def test_preempting_a_sharer_frees_only_its_own_blocks():
    cfg = EngineConfig(40, block_size=16, watermark=0.0, max_model_len=1024, enable_prefix_caching=True)
    engine = SimEngine(cfg, make_policy("sarathi"), Shapes())
    ids = (1, 2, 3)
    first = Request(0, 0.0, 40, 50, prefix_ids=ids, prefix_block=16)
    second = Request(1, 0.1, 40, 50, prefix_ids=ids, prefix_block=16)
    engine.add(first)
    engine.advance(0.1)
    engine.add(second)
    engine.advance(0.2)
    assert second.cached_tokens == 32  # holds first's two full blocks
    assert engine.exclusive_blocks(first) == first.blocks - 2
    assert engine.exclusive_blocks(second) == second.blocks - 2


def uncached_case(policy: str):
    """At t=0 a 600-token prompt (pb 100) leaves its prefix cached. At t=10 a long prompt extending it (700 tokens,
    600 cached) and a short new one (300 tokens) wait behind a running request."""
    cfg = EngineConfig(
        400, block_size=100, token_budget=100, max_num_seqs=2, max_model_len=2048, enable_prefix_caching=True
    )
    engine = SimEngine(cfg, make_policy(policy), Shapes())
    ids = tuple(range(7))
    seed = Request(0, 0.0, 600, 1, prefix_ids=ids[:6], prefix_block=100)
    blocker = Request(1, 9.0, 100, 200, tbt=5.0)
    long = Request(2, 10.0, 700, 1, prefix_ids=ids, prefix_block=100)
    short = Request(3, 10.0, 300, 1, prefix_ids=(50, 51, 52), prefix_block=100)
    engine.run([seed, blocker, long, short])
    return long, short


@pytest.mark.parametrize(
    ("policy", "long_first"),
    [("slai-spf-dynamic", False), ("slai-uncached", True), ("slai-lpm", True), ("sarathi", True)],
)
def test_orders_that_see_the_cache(policy, long_first):
    """SPF on the whole prompt serves the 300-token prompt first; SPF on the uncached part (100 tokens against 300)
    and longest-prefix-match serve the cached one first (FCFS does too: it arrived first)."""
    long, short = uncached_case(policy)
    assert long.cached_tokens == 600
    assert (long.token_times[0] < short.token_times[0]) == long_first


def test_longest_prefix_first_starves_a_prompt_with_no_match():
    """LPM: a prompt nothing in the cache matches waits while prompts with a cached prefix are queued; FCFS serves
    it in turn. (One request at a time; the first holds the engine 1 s while the others arrive.)"""

    def run(policy):
        cfg = EngineConfig(
            2000, block_size=16, token_budget=64, max_num_seqs=1, max_model_len=4096, enable_prefix_caching=True
        )
        engine = SimEngine(cfg, make_policy(policy), Shapes())
        shared = tuple(range(8))
        reqs = [Request(0, 0.0, 128, 100, tbt=1.0, prefix_ids=shared, prefix_block=16)]
        reqs.append(Request(1, 0.05, 64, 1, prefix_ids=(900, 901, 902, 903), prefix_block=16))
        reqs += [
            Request(i, 0.05 + 0.01 * i, 160, 1, prefix_ids=(*shared, 100 + i, 200 + i), prefix_block=16)
            for i in range(2, 40)
        ]
        engine.run(reqs)
        lone = reqs[1]
        return sum(q.token_times[0] < lone.token_times[0] for q in reqs[2:])

    assert run("slai-fcfs-fixed") == 0
    assert run("slai-lpm") == 38  # served last


SESSIONS = WorkloadConfig(trace="sessions", num_sessions=25, qps=2.0, think_time=1.0, seed=3)


def session_run(policy: str, replicas: str | None = None, router: str = "round-robin"):
    spec = RunSpec(policy=policy, workload=SESSIONS, enable_prefix_caching=True, replicas=replicas, router=router)
    return run(spec)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_chat_sessions_hit_within_their_earlier_turns(policy):
    """The closed loop with caching on: a turn reuses at most its session's previous prompt (whole blocks; answers
    are generated, never cached), the first turn of a session nothing, and some turns reuse something."""
    result, summary = session_run(policy)
    by_id = {r.id: r for r in result.requests}
    for r in result.requests:
        if r.cached_tokens is None:
            continue
        prev = by_id.get(r.id - 1)
        same = prev is not None and prev.prefix_ids[:1] == r.prefix_ids[:1] and prev.prompt_len < r.prompt_len
        bound = prev.prompt_len // 16 * 16 if same else 0
        assert r.cached_tokens <= min(bound, r.prompt_len - 1), (policy, r.id)
    assert summary["prefix_cache_hits"] > 0


def test_chat_sessions_with_caching_are_deterministic_per_seed():
    a = session_run("slai", "2", "prefix-affinity")[1]
    b = session_run("slai", "2", "prefix-affinity")[1]
    assert a == b and a["prefix_cache_hits"] > 0
