"""Shared system prompts (--system-prompts K:L:FRACTION) on top of a trace, a Mooncake trace and sessions."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from llmsched.cli import main
from llmsched.errors import UserError
from llmsched.workload import Request, WorkloadConfig
from llmsched.workload.compose import build_workload
from llmsched.workload.prefix import prefix_share
from llmsched.workload.system_prompts import SystemPrompts, SystemPromptSpec, parse_system_prompts


@pytest.mark.parametrize("text", ["4:1000", "4:1000:0.5:1", "x:1000:0.5", "0:1000:0.5", "4:0:0.5", "4:10:0", "4:1:2"])
def test_bad_specs(text):
    with pytest.raises(UserError, match="--system-prompts"):
        parse_system_prompts(text)


def test_whole_blocks_of_the_same_prompt_are_shared_and_the_rest_is_own():
    sp = SystemPrompts(SystemPromptSpec(2, 40, 1.0), block=16)
    a, b, c = Request(0, 0, 100, 5), Request(1, 0, 70, 5), Request(2, 0, 100, 5)
    sp.apply(a, 0), sp.apply(b, 0), sp.apply(c, 1)
    assert (a.prompt_len, a.prefix_block, len(a.prefix_ids)) == (100, 16, 7)
    assert a.prefix_ids[:2] == b.prefix_ids[:2]  # 40 tokens: two whole blocks of 16
    assert not set(a.prefix_ids[2:]) & set(b.prefix_ids)  # the block holding token 40 is partly the request's own
    assert not set(a.prefix_ids) & set(c.prefix_ids)  # another system prompt


def test_a_prompt_no_longer_than_the_system_prompt_is_all_of_it():
    sp = SystemPrompts(SystemPromptSpec(1, 100, 1.0), block=16)
    a, b, c = Request(0, 0, 40, 5), Request(1, 0, 40, 5), Request(2, 0, 300, 5)
    for r in (a, b, c):
        sp.apply(r, 0)
    assert a.prefix_ids == b.prefix_ids  # same 40 tokens, partial last block included
    assert c.prefix_ids[:2] == a.prefix_ids[:2] and c.prefix_ids[2] != a.prefix_ids[2]


def test_on_a_trace_with_ids_sharing_follows_both_the_system_prompt_and_the_trace():
    sp = SystemPrompts(SystemPromptSpec(2, 600, 1.0), block=16)
    reqs = [Request(i, 0, 1500, 5, prefix_ids=(7, 8, 9), prefix_block=512) for i in range(3)]
    sp.apply(reqs[0], 0), sp.apply(reqs[1], 0), sp.apply(reqs[2], 1)
    assert reqs[0].prefix_block == 512 and reqs[0].prefix_ids == reqs[1].prefix_ids  # same prompt, same content
    assert not set(reqs[0].prefix_ids) & set(reqs[2].prefix_ids)
    other = Request(3, 0, 1500, 5, prefix_ids=(7, 10, 11), prefix_block=512)
    sp.apply(other, 0)
    assert other.prefix_ids[0] == reqs[0].prefix_ids[0] and other.prefix_ids[1] != reqs[0].prefix_ids[1]


def test_a_fraction_of_requests_take_one_and_lengths_stay(write_trace):
    path = write_trace([(200 + i, 10) for i in range(2000)])
    plain, _ = build_workload(WorkloadConfig(trace=path, seed=5))
    cfg = WorkloadConfig(trace=path, seed=5, system_prompts="3:64:0.3")
    reqs, _ = build_workload(cfg)
    again, _ = build_workload(cfg)
    assert [r.prefix_ids for r in reqs] == [r.prefix_ids for r in again]
    assert [(r.arrival, r.prompt_len) for r in reqs] == [(r.arrival, r.prompt_len) for r in plain]
    taken = [r for r in reqs if r.prefix_ids]
    assert len(taken) / len(reqs) == pytest.approx(0.3, abs=0.03)
    firsts = {r.prefix_ids[:4] for r in taken}
    assert len(firsts) == 3  # 64 tokens = 4 whole blocks, one of 3 prompts
    hits, total = prefix_share(reqs)
    assert total == sum(math.ceil(r.prompt_len / 16) for r in taken)
    assert prefix_share(reqs, block=16) == (hits, sum(math.ceil(r.prompt_len / 16) for r in reqs))
    assert hits == 4 * (len(taken) - 3)  # every prompt's 4 system blocks but the first use of each


def test_sessions_keep_their_own_sharing_under_a_system_prompt():
    cfg = WorkloadConfig(trace="sessions", num_sessions=200, system_prompts="2:100:1.0", seed=1)
    wl, _ = build_workload(cfg)
    reqs = sorted(wl.expand(), key=lambda r: r.id)
    for s in wl.sessions:
        turns = reqs[s.first_id : s.first_id + len(s.turns)]
        for prev, nxt in zip(turns, turns[1:], strict=False):
            whole = prev.prompt_len // 16
            assert nxt.prefix_ids[:whole] == prev.prefix_ids[:whole]
    long = [r for r in reqs if r.prompt_len >= 100]
    assert len({r.prefix_ids[:6] for r in long}) == 2  # 100 tokens: 6 whole blocks, of one of 2 prompts
    plain, _ = build_workload(replace(cfg, system_prompts=None))
    assert [r.prompt_len for r in sorted(plain.expand(), key=lambda r: r.id)] == [r.prompt_len for r in reqs]


def test_draws_are_seeded():
    sp = SystemPrompts(SystemPromptSpec(4, 10, 0.5), 16)
    a, b = sp.draw(1000, np.random.default_rng(1)), sp.draw(1000, np.random.default_rng(1))
    assert (a == b).all() and set(a) == {-1, 0, 1, 2, 3}


def test_simulate_with_system_prompts(capsys, write_trace):
    path = write_trace([(300 + i, 5) for i in range(30)])
    try:
        main(["simulate", "--trace", path, "--system-prompts", "2:256:0.5", "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    assert json.loads(capsys.readouterr().out)["completed"] == 30
