"""Multi-turn chat sessions (--trace sessions): the data, the turns' prompts and prefix ids, the closed loop."""

import copy
import math
from dataclasses import replace

import numpy as np
import pytest

from llmsched.errors import UserError
from llmsched.perf import analytic_model, get_gpu, get_model
from llmsched.policies import make_policy
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec, validate
from llmsched.workload import WorkloadConfig
from llmsched.workload.compose import build_workload
from llmsched.workload.request import FINISHED, REJECTED
from llmsched.workload.sessions import BOS, EOS, INST, load_sessions, sessions_path, turn_lengths

CFG = WorkloadConfig(trace="sessions", num_sessions=40, qps=0.5, think_time=2.0, seed=3)


def sessions(cfg=CFG):
    wl, _ = build_workload(cfg)
    return wl


def test_the_sessions_ship_small_and_valid():
    every = load_sessions()
    assert len(every) == 4000 and sessions_path().stat().st_size < 1_000_000
    assert all(len(s) >= 1 and all(u > 0 and a > 0 for u, a in s) for s in every)
    assert max(p + d for s in every for p, d in turn_lengths(s)) <= 8192


def test_a_turn_prompt_is_the_conversation_so_far():
    turns = [(10, 20), (5, 30), (8, 4)]
    assert turn_lengths(turns) == [
        (BOS + 10 + INST, 20),
        (BOS + 10 + INST + 20 + EOS + 5 + INST, 30),
        (BOS + 10 + INST + 20 + EOS + 5 + INST + 30 + EOS + 8 + INST, 4),
    ]


def test_each_turn_shares_the_previous_prompt_and_answer_in_whole_blocks():
    wl = sessions()
    reqs = wl.expand()
    ids_of_session = []
    for s in wl.sessions:
        turns = [r for r in reqs if s.first_id <= r.id < s.first_id + len(s.turns)]
        turns.sort(key=lambda r: r.id)
        for prev, nxt in zip(turns, turns[1:], strict=False):
            assert prev.prompt_len + prev.decode_len < nxt.prompt_len
            whole = prev.prompt_len // 16
            assert nxt.prefix_ids[:whole] == prev.prefix_ids[:whole]  # turn k's whole blocks lead turn k+1
            if prev.prompt_len % 16:  # a partial last block is the turn's own
                assert prev.prefix_ids[-1] not in nxt.prefix_ids
        for r in turns:
            assert len(r.prefix_ids) == math.ceil(r.prompt_len / 16) and r.prefix_block == 16
        ids_of_session.append({h for r in turns for h in r.prefix_ids})
    assert sum(map(len, ids_of_session)) == len(set().union(*ids_of_session))  # no id shared across sessions


def test_with_generated_answers_a_turn_ids_extend_the_previous_prompt_and_answer():
    """`--answers generated`: a turn's ids cover its prompt and its answer (the answer's blocks cacheable); the next
    turn's prompt ids start with every whole block of them; the lengths are the recorded mode's."""
    recorded = sessions().expand()
    wl = sessions(replace(CFG, answers="generated"))
    reqs = wl.expand()
    assert [(r.prompt_len, r.decode_len) for r in reqs] == [(r.prompt_len, r.decode_len) for r in recorded]
    for r, old in zip(reqs, recorded, strict=True):
        assert r.answer_ids and not old.answer_ids
        assert len(r.prefix_ids) == math.ceil((r.prompt_len + r.decode_len) / 16)
        assert r.prefix_ids[: r.prompt_len // 16] == old.prefix_ids[: r.prompt_len // 16]
    for prev, nxt in zip(reqs, reqs[1:], strict=False):
        if wl.turn_of(prev.id)[0] != wl.turn_of(nxt.id)[0]:
            continue
        whole = (prev.prompt_len + prev.decode_len) // 16
        assert nxt.prefix_ids[:whole] == prev.prefix_ids[:whole]
        if (prev.prompt_len + prev.decode_len) % 16:  # the answer's partial last block is the turn's own
            assert prev.prefix_ids[-1] not in nxt.prefix_ids


def test_generated_answers_hit_more_than_recorded_ones_and_stay_deterministic():
    def outcome(answers):
        spec = RunSpec(workload=replace(CFG, answers=answers), enable_prefix_caching=True)
        result, summary = run(spec)
        return [(r.id, r.cached_tokens, r.token_times) for r in result.requests], summary["prefix_cache_hit_rate"]

    generated, recorded = outcome("generated"), outcome("recorded")
    assert generated == outcome("generated")
    assert generated[1] > recorded[1] + 0.1


def test_prefix_block_follows_the_config():
    reqs = sessions(replace(CFG, prefix_block=128)).expand()
    assert all(r.prefix_block == 128 and len(r.prefix_ids) == math.ceil(r.prompt_len / 128) for r in reqs)


def test_starts_and_think_times_have_their_means():
    wl = sessions(replace(CFG, num_sessions=4000, qps=2.0, think_time=7.0))
    starts = sorted(s.start for s in wl.sessions)
    assert np.mean(np.diff(starts)) == pytest.approx(0.5, rel=0.05)
    thinks = np.concatenate([s.thinks[1:] for s in wl.sessions])
    assert len(thinks) > 9000 and thinks.mean() == pytest.approx(7.0, rel=0.05)


def engine(max_model_len=8192):
    perf = analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"))
    return SimEngine(EngineConfig(num_blocks=4000, max_model_len=max_model_len), make_policy("sarathi"), perf)


def test_the_next_turn_arrives_after_the_answer_plus_the_think_time():
    wl = sessions()
    result = engine().run(wl)
    assert len(result.requests) == wl.num_turns and all(r.state == FINISHED for r in result.requests)
    end = {r.id: r.token_times[-1] for r in result.requests}
    for r in result.requests:
        for s in wl.sessions:
            k = r.id - s.first_id
            if 0 < k < len(s.turns):
                assert r.arrival == pytest.approx(end[r.id - 1] + s.thinks[k])
            elif k == 0:
                assert r.arrival == s.start


def test_a_rejected_turn_ends_its_session():
    wl = sessions()
    result = engine(max_model_len=600).run(wl)
    sent = {r.id: r for r in result.requests}
    assert any(r.state == REJECTED for r in result.requests) and len(sent) < wl.num_turns
    for s in wl.sessions:
        turns = [sent.get(s.first_id + k) for k in range(len(s.turns))]
        issued = [r for r in turns if r is not None]
        assert turns[: len(issued)] == issued  # a prefix of the session's turns
        assert all(r.state == FINISHED for r in issued[:-1])
        if len(issued) < len(turns):
            assert issued[-1].state == REJECTED and "max_model_len" in issued[-1].reason


def test_same_seed_same_run_and_another_seed_differs():
    spec = RunSpec(workload=CFG, replicas="2", router="jsq")

    def outcome(s):
        result, summary = run(s)
        return [(r.id, r.arrival, r.prompt_len, r.prefix_ids, r.token_times) for r in result.requests], summary

    a, b = outcome(spec), outcome(copy.deepcopy(spec))
    assert a == b
    other, _ = outcome(replace(spec, workload=replace(CFG, seed=4)))
    assert other != a[0]
    assert a[1]["sessions"] == 40 and a[1]["turns_not_sent"] == 0


@pytest.mark.parametrize(
    "cfg,match",
    [
        (replace(CFG, num_requests=5), "with --trace sessions use --num-sessions"),
        (replace(CFG, arrival="trace"), "sessions have no timestamps"),
        (replace(CFG, think_time=-1.0), "--think-time is -1"),
        (replace(CFG, num_sessions=0), "--num-sessions is 0"),
        (WorkloadConfig(num_sessions=3), "--num-sessions applies to --trace sessions"),
        (WorkloadConfig(think_time=3.0), "--think-time applies to --trace sessions"),
        (WorkloadConfig(answers="generated"), "--answers applies to --trace sessions"),
    ],
)
def test_flags_of_the_wrong_workload_are_refused_before_running(cfg, match):
    with pytest.raises(UserError, match=match):
        validate(RunSpec(workload=cfg))


@pytest.mark.parametrize(
    "text,match",
    [
        ("session,turn,user_tokens,assistant_tokens\n0,0,5,x\n", "line 2: expected integers"),
        ("session,turn,user_tokens,assistant_tokens\n0,0,5,6\n0,2,5,6\n", "line 3: expected session 0 turn 1 or"),
        ("session,turn,user_tokens,assistant_tokens\n0,0,5,6\n2,0,5,6\n", "or session 1 turn 0"),
        ("session,turn,user_tokens,assistant_tokens\n1,0,5,6\n", "line 2: expected session 0 turn 0"),
        ("session,turn,user_tokens,assistant_tokens\n0,0,0,6\n", "line 2: .*positive token counts"),
        ("session,turn\n", "no sessions"),
    ],
)
def test_a_bad_sessions_file_names_the_line(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(UserError, match=match):
        load_sessions(path)


def test_a_turn_longer_than_max_model_len_is_rejected_on_arrival_and_ends_its_session():
    result, summary = run(RunSpec(workload=CFG, max_model_len=1500))
    rejected = [r for r in result.requests if r.state == REJECTED]
    assert rejected and all(r.reason.startswith("prompt + output of") for r in rejected)
    assert all(r.prompt_len + r.decode_len > 1500 for r in rejected)
    assert summary["rejected"] == len(rejected) and summary["turns_not_sent"] > 0
    assert summary["completed"] + summary["rejected"] + summary["turns_not_sent"] == sessions().num_turns


def test_scaled_sessions_for_serving_are_cut_to_length_and_deterministic_per_seed():
    from llmsched.integrations.ray_serve.client import session_tokens
    from llmsched.workload.sessions import Sessions, scaled_sessions
    from llmsched.workload.tiers import parse_tiers

    picked = scaled_sessions(12, seed=4, scale=0.5, min_turns=3, max_len=1024)
    assert picked == scaled_sessions(12, seed=4, scale=0.5, min_turns=3, max_len=1024)
    assert picked != scaled_sessions(12, seed=5, scale=0.5, min_turns=3, max_len=1024)
    assert len(picked) == 12 and all(len(t) >= 3 for t in picked)
    assert all(p + a <= 1024 for t in picked for p, a in turn_lengths(t))
    with pytest.raises(UserError, match="only"):
        scaled_sessions(5, seed=0, scale=1.0, min_turns=40, max_len=512)
    work = Sessions(picked, np.zeros(12), np.zeros(sum(map(len, picked))), parse_tiers(None) * 12, prefix_block=128)
    tokens = session_tokens(work, vocab=1000, seed=1)
    assert tokens == session_tokens(work, vocab=1000, seed=1) and tokens != session_tokens(work, vocab=1000, seed=2)
    for s, ids in zip(work.sessions, tokens, strict=True):  # every turn's prompt is a prefix of the session's ids
        assert len(ids) == s.turns[-1][0] and all(3 <= t < 1000 for t in ids)
