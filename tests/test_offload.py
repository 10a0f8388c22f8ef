"""The CPU KV tier under the simulated prefix cache (vLLM's --kv-offloading-size): its books, its loads, its flag."""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_prefix_cache import PERF, conversation_requests, rows_st, shared_bound

from llmsched.cli import main
from llmsched.errors import UserError
from llmsched.policies import POLICIES, make_policy
from llmsched.routers import make_router
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.sim.offload import CpuTier, OffloadingCache
from llmsched.studies.spec import RunSpec, engine_config, validate
from llmsched.workload import Request
from llmsched.workload.request import FINISHED, UNFINISHED


def offload_engine(policy, blocks, bs, cpu_blocks, load_s=1e-3, budget=256, seqs=8, check=True):
    cfg = EngineConfig(
        blocks,
        token_budget=budget,
        max_num_seqs=seqs,
        block_size=bs,
        max_model_len=1024,
        enable_prefix_caching=True,
        kv_offloading_blocks=cpu_blocks,
        load_s_per_block=load_s,
    )
    p = make_policy(policy, **({"tile": budget} if policy == "rad" else {}))
    engine = SimEngine(cfg, p, PERF)
    if check:
        done = p.on_batch_done

        def checked(view, plan, start, end):
            engine.kv.check([*engine.running, *engine.loading])
            if cpu_blocks:
                engine.kv.check_cpu()
            done(view, plan, start, end)

        p.on_batch_done = checked
    return engine


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_st,
    pb=st.sampled_from([8, 16, 64]),
    bs=st.sampled_from([4, 16]),
    blocks=st.integers(30, 120),
    cpu=st.integers(1, 300),
    load_s=st.sampled_from([0.0, 1e-3, 0.05]),
)
def test_every_policy_keeps_both_tiers_books(rows, pb, bs, blocks, cpu, load_s):
    """Per batch: the GPU books balance with loading requests counted as holders (reference counts never negative,
    a block never both free and cached, free + held == total) and the CPU tier's count is its books, within its
    size. At the end: every GPU block freed or cached; a request's GPU and CPU hits together within the prefix it
    shares with another request (so a CPU hit never loads more than the request's prefix)."""
    reqs = conversation_requests(rows, pb)
    for name in POLICIES:
        engine = offload_engine(name, blocks * 64 // bs, bs, cpu, load_s)
        result = engine.run(copy.deepcopy(reqs))
        kv = engine.kv
        kv.check([*engine.running, *engine.loading])
        kv.check_cpu()
        assert kv.cpu.used <= cpu, name
        if all(r.state != UNFINISHED for r in result.requests):
            assert kv.free == kv.total and engine.free_blocks == kv.total, name
            assert not engine.loading, name
        for r in result.requests:
            if r.external_cached_tokens is not None:
                assert r.cached_tokens is not None and r.external_cached_tokens % bs == 0, name
                both = r.cached_tokens + r.external_cached_tokens
                assert both <= shared_bound(r, [q for q in result.requests if q is not r], bs), name
            if r.state == FINISHED:
                assert r.generated == r.decode_len == len(r.token_times), name


def evicted_then_asked_again(cpu_blocks, load_s=1e-3):
    """A's 192-token prompt, then prompts that fill the 20-block GPU cache, then B, which shares A's prefix."""
    a = Request(0, 0.0, 200, 2, tbt=1.0, prefix_ids=(1, 2, 3), prefix_block=64)
    fill = [Request(i, 1.0 + i, 300, 2, tbt=1.0, prefix_ids=(100 * i, 100 * i + 1), prefix_block=64) for i in (1, 2)]
    b = Request(9, 10.0, 200, 2, tbt=1.0, prefix_ids=(1, 2, 3), prefix_block=64)
    engine = offload_engine("vllm-v1", 20, 16, cpu_blocks, load_s, budget=512)
    result = engine.run([a, *fill, b])
    return engine, {r.id: r for r in result.requests}


def test_a_prefix_evicted_from_the_gpu_is_loaded_from_the_cpu_tier():
    engine, done = evicted_then_asked_again(100, load_s=0.01)
    b = done[9]
    assert b.cached_tokens == 0  # the GPU cache lost A's blocks
    assert b.external_cached_tokens == 12 * 16  # A's 12 full blocks, loaded: the hit stops before B's last token
    assert b.state == FINISHED
    # B waits for the load (12 blocks x 10 ms) before its first chunk: its first token comes after it.
    assert b.token_times[0] - b.arrival > 12 * 0.01
    _, without = evicted_then_asked_again(0)  # no CPU tier: B prefills its whole prompt
    assert without[9].external_cached_tokens is None and without[9].cached_tokens == 0


def test_a_small_tier_evicts_least_recently_used_first():
    tier = CpuTier(10)
    assert tier.store(1, 0, 4) == 4
    assert tier.store(2, 0, 4) == 4
    tier.touch([1])  # key 1 used again: key 2 is now the least recent
    assert tier.store(3, 0, 4) == 4
    assert tier.used == 10 and tier.stored == {2: 2, 1: 4, 3: 4}  # key 2 lost its tail
    assert tier.store(3, 6, 8) == 0  # a gap before these blocks: not stored
    assert tier.store(4, 0, 20) == 10  # more than the tier: what fits, the rest evicted
    assert tier.stored == {4: 10} and tier.evicted == 2 + 10


def test_cpu_hit_follows_the_gpu_hit_and_stops_at_a_gap():
    kv = OffloadingCache(50, 16, 100)
    r = Request(0, 0.0, 4 * 64 + 10, 1, tbt=1.0, prefix_ids=(1, 2, 3, 4, 5), prefix_block=64)
    lay = kv._layout(r)
    kv.cpu.store(lay[0][0], 0, 4)
    kv.cpu.store(lay[0][1], 0, 2)  # the second trace block only half stored
    assert kv.cpu_hit(r, 0) == 6
    assert kv.cpu_hit(r, 4) == 2
    assert kv.cpu_hit(r, 6) == 0


def test_off_by_default_and_sized_from_gib():
    assert engine_config(RunSpec(enable_prefix_caching=True)).kv_offloading_blocks == 0
    spec = RunSpec(model="llama-3.1-8b", gpu="h100-80gb", enable_prefix_caching=True, kv_offloading_size=2)
    cfg = engine_config(spec)
    assert cfg.kv_offloading_blocks == 2 * 2**30 // (16 * 131072)  # 128 KiB of KV per token
    assert cfg.load_s_per_block == pytest.approx(16 * 131072 / 63.0e9)  # PCIe Gen5 x16


def test_offloading_needs_prefix_caching():
    with pytest.raises(UserError, match="--kv-offloading-size needs --prefix-caching"):
        validate(RunSpec(kv_offloading_size=4.0))


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_bad_flag_values_get_one_line(capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--prefix-caching", "--kv-offloading-size", value, "--num-requests", "5", "--json"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--kv-offloading-size" in err and "Traceback" not in err


def test_the_flag_splits_hits_by_tier(capsys, tmp_path):
    rows = [{"timestamp": 1000 * i, "input_length": 1100, "output_length": 4, "hash_ids": [1, 2, 3]} for i in range(6)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["simulate", "--trace", str(trace), "--prefix-caching", "--json", "--num-blocks", "200"]
    main([*args, "--kv-offloading-size", "1"])
    s = json.loads(capsys.readouterr().out)
    by = s["prompt_tokens_cached_by_source"]
    assert by["device"] == s["prefix_cache_hits"] and by["host"] == s["external_prefix_cache_hits"]
    assert s["combined_prefix_cache_hit_rate"] == pytest.approx((by["device"] + by["host"]) / s["prefix_cache_queries"])
    main(args)
    assert "external_prefix_cache_hits" not in json.loads(capsys.readouterr().out)


def test_prefix_routers_size_their_picture_by_both_tiers():
    r = make_router("prefix-score", [1.0, 1.0], 0, cache_tokens=[1000, 1000], kv_tokens=[100, 100])
    assert [idx.tokens for idx in r.indexes] == [1000, 1000] and r.kv_tokens == [100, 100]
    plain = make_router("cache-aware", [1.0], 0, cache_tokens=[500])
    assert plain.kv_tokens == [500]
