import json
import math

import pytest

from llmsched.cli import main
from llmsched.perf import BatchShape
from llmsched.studies.bounds import replica_tile, spec_bound, workload_stats
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.theory import Limits, WorkloadStats, batch_time, memory_cap, optimal_tile, throughput, tile_shape
from llmsched.workload import WorkloadConfig

PERF = perf_model(RunSpec())
W = WorkloadStats.of([1000, 2000, 500], [100, 400, 50])


def test_workload_stats_by_hand():
    w = WorkloadStats.of([10, 20], [3, 1])
    # request 1: decode steps at contexts 10, 11; request 2 has no decode step (D = 1)
    assert w.mean_prompt == 15 and w.mean_decode == 2
    assert w.decode_context == pytest.approx(10.5)
    assert w.prompt_position == pytest.approx((55 + 210) / 30)
    assert w.prompt_in_progress == pytest.approx((100 + 400) / 30)
    assert w.work == pytest.approx(16)  # E[P + D - 1]
    assert w.decode_share == pytest.approx(1 / 16)


def test_tile_shape_has_the_steady_mix():
    s = tile_shape(600, W)
    assert s.tokens == pytest.approx(600)
    assert s.decodes / s.tokens == pytest.approx(W.decode_share)
    assert s.decode_context / s.decodes == pytest.approx(W.decode_context)
    assert s.prefill_pairs / s.prefill_tokens == pytest.approx(W.prompt_position)


def test_tile_time_is_the_simulators_batch_time():
    s = tile_shape(512, W)
    assert batch_time(PERF, 512, W) == PERF.batch_time(s)
    n = round(s.decodes)
    integer = BatchShape.of([(512 - n, int(s.prefill_context))], [round(W.decode_context)] * n)
    assert batch_time(PERF, 512, W) == pytest.approx(PERF.batch_time(integer), rel=0.01)


def test_throughput_rises_so_memory_sets_the_tile():
    xs = [throughput(PERF, b, W) for b in (64, 128, 256, 512, 1024, 2048)]
    assert xs == sorted(xs)
    lim = Limits(kv_tokens=200_000)
    tile = optimal_tile(PERF, W, lim)
    assert tile.tokens == math.floor(memory_cap(W, lim))

    # the tile's decodes and their contexts, plus the prompts in prefill, fit in the pool; one more token not
    def used(b):
        f = W.decode_share
        return f * b * (W.decode_context + 8) + W.prompt_in_progress + (1 - f) * b

    assert used(tile.tokens) <= 200_000 < used(tile.tokens + 1)


def test_budget_sequence_limit_and_tbt_cap_the_tile():
    lim = Limits(kv_tokens=1e6)
    assert optimal_tile(PERF, W, lim, budget=256).tokens == 256
    seqs = optimal_tile(PERF, W, Limits(kv_tokens=1e6, max_num_seqs=33))
    assert W.decode_share * seqs.tokens <= 32 < W.decode_share * (seqs.tokens + 1)
    free = optimal_tile(PERF, W, lim)
    tbt = 0.7 * free.batch_time_s
    capped = optimal_tile(PERF, W, Limits(kv_tokens=1e6, tbt=tbt))
    assert capped.batch_time_s <= tbt < batch_time(PERF, capped.tokens + 1, W)
    with pytest.raises(ValueError, match="TBT"):
        optimal_tile(PERF, W, Limits(kv_tokens=1e6, tbt=1e-4))
    with pytest.raises(ValueError, match="KV pool"):
        optimal_tile(PERF, W, Limits(kv_tokens=100))


def test_bound_sums_over_replicas_and_fixed_budget_is_lower():
    spec = RunSpec(workload=WorkloadConfig(num_requests=2000))
    one = spec_bound(spec, (256, 512))
    w = workload_stats(spec)
    assert one.qps == pytest.approx(one.tiles[0].tokens_per_s / w.work)
    assert one.fixed_qps(256) < one.fixed_qps(512) <= one.qps
    four = spec_bound(RunSpec(workload=spec.workload, replicas="4"), (512,))
    assert four.qps == pytest.approx(4 * one.qps)
    mixed = spec_bound(RunSpec(workload=spec.workload, replicas="rtx6000ada:1,h100-80gb:1"), (512,))
    h100 = replica_tile(RunSpec(workload=spec.workload, gpu="h100-80gb"))
    assert mixed.qps == pytest.approx(one.qps + h100.tokens_per_s / w.work)


def test_theory_command_json(capsys):
    main(["theory", "--json", "--budgets", "256,512"])
    out = json.loads(capsys.readouterr().out)
    assert out["stability_bound_qps"] > out["fixed_budget_bound_qps"]["512"] > out["fixed_budget_bound_qps"]["256"]
    assert isinstance(out["optimal_tile_tokens"], int)
    assert out["replicas"][0]["optimal_tile_tokens"] == out["optimal_tile_tokens"]


@pytest.mark.parametrize(
    "args",
    [["--budgets", "a"], ["--budgets", "0"], ["--tbt", "0"], ["--tbt", "0.0001"], ["--replicas", "tpu:2"]],
)
def test_theory_command_bad_input(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(["theory", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("llmsched: error:") and err.count("\n") == 1
