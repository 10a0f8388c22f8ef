import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmsched.perf import BatchShape, analytic_model, get_gpu, get_model, kv_blocks
from llmsched.perf.catalog import estimated_kv_blocks
from llmsched.perf.paper_fit import fit_paper_gpu, mape
from llmsched.perf.roofline import PAPER_BW_EFF, PAPER_FLOPS_EFF, PAPER_OVERHEAD_S

PAPER_BLOCKS = 14_733  # the reference's KV pool for Mistral-7B on the RTX 6000 Ada


def test_calibration_constants_are_the_fit():
    flops_eff, bw_eff, overhead = fit_paper_gpu()
    assert flops_eff == pytest.approx(PAPER_FLOPS_EFF, abs=1e-3)
    assert bw_eff == pytest.approx(PAPER_BW_EFF, abs=1e-3)
    assert overhead == pytest.approx(PAPER_OVERHEAD_S, abs=2e-5)


def test_calibrated_error_on_the_paper_points():
    m = analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"))
    assert mape(m) <= 0.05


def test_kv_pool_is_the_references_and_the_estimate_is_near_it():
    model, gpu = get_model("mistral-7b"), get_gpu("rtx6000ada")
    assert kv_blocks(model, gpu) == PAPER_BLOCKS
    assert abs(estimated_kv_blocks(model, gpu) - PAPER_BLOCKS) / PAPER_BLOCKS < 0.01
    assert kv_blocks(model, gpu, block_size=32) == estimated_kv_blocks(model, gpu, block_size=32)


def test_batch_time_grows_with_tokens_decodes_and_context():
    m = analytic_model(get_model("llama-3-8b"), get_gpu("a100-80gb"))
    t = [m.batch_time(BatchShape.of([(n, 0)], [])) for n in (16, 256, 1024, 4096)]
    assert t == sorted(t) and t[-1] > 3 * t[0]
    d = [m.batch_time(BatchShape.of([(256, 0)], [c] * k)) for k, c in ((0, 0), (32, 1000), (32, 4000), (96, 4000))]
    assert d == sorted(d) and d[-1] > d[0]
    assert m.batch_time(BatchShape()) == 0.0


def test_memory_bound_batches_follow_bandwidth_and_compute_bound_ones_flops():
    model = get_model("mistral-7b")
    decodes = BatchShape.of([], [2000] * 64)
    prefill = BatchShape.of([(4096, 0)], [])

    def t(gpu, shape):
        return analytic_model(model, get_gpu(gpu)).batch_time(shape)

    # bandwidth: 960 GB/s < 2,039 GB/s < 3,350 GB/s
    assert t("rtx6000ada", decodes) > t("a100-80gb", decodes) > t("h100-80gb", decodes)
    # dense fp16: A100 312 < RTX 6000 Ada 364 < H100 989 TFLOP/s
    assert t("a100-80gb", prefill) > t("rtx6000ada", prefill) > t("h100-80gb", prefill)


def test_h100_efficiency_constants_are_the_fit():
    from llmsched.perf.paper_fit import fit_h100
    from llmsched.perf.roofline import H100

    flops, bw, overhead, kv = fit_h100()
    assert (flops, bw, kv) == pytest.approx((H100.flops, H100.bw, H100.kv_bw), abs=1e-3)
    assert overhead == pytest.approx(H100.overhead_s, abs=2e-6)


def test_h100_factors_fit_the_h100_rows():
    from llmsched.perf.fitted import builtin_rows
    from llmsched.perf.roofline import estimated_model

    for name in ("mistral-7b", "llama-3-8b"):
        m = estimated_model(get_model(name), get_gpu("h100-80gb"))
        rows = builtin_rows(name)
        err = [abs(m.batch_time(r.shape) / (r.batch_ms / 1e3) - 1) for r in rows]
        assert sum(err) / len(err) < 0.04 and max(err) < 0.15


def test_catalog_models_have_their_published_parameter_counts():
    counts = {"llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.55e9, "mixtral-8x7b": 46.70e9, "qwen2.5-32b": 32.76e9}
    for name, n in counts.items():
        assert get_model(name).params == pytest.approx(n, rel=2e-3)
    mixtral = get_model("mixtral-8x7b")
    active = mixtral.active_layer_params + 2 * mixtral.hidden * mixtral.vocab
    assert active == pytest.approx(12.88e9, rel=2e-3)  # FLOPs follow the 2 experts a token is routed to


def test_moe_flops_follow_active_and_reads_follow_routed_experts():
    mixtral, gpu = get_model("mixtral-8x7b"), get_gpu("h100-80gb")
    m = analytic_model(mixtral, gpu, tp=2)
    one, many = BatchShape.of([], [100]), BatchShape.of([(2048, 0)], [])
    assert m.flops(many) / 2048 == pytest.approx(2 * mixtral.active_layer_params / 2, rel=0.05)
    # a decode reads its 2 experts of 8; a 2048-token chunk reads every expert
    assert m.weight_read_bytes(one) < 0.4 * m.weight_read_bytes(many)
    assert m.weight_read_bytes(many) == pytest.approx(mixtral.weight_bytes / 2, rel=1e-3)


def test_tensor_parallelism_splits_work_and_pays_the_link():
    model, gpu = get_model("llama-3.1-70b"), get_gpu("h100-80gb")
    big = BatchShape.of([(2048, 0)], [1000] * 64)
    small = BatchShape.of([], [500] * 4)
    t = {n: analytic_model(model, gpu, tp=n) for n in (1, 2, 4, 8)}
    assert t[1].comm_time(big) == 0.0
    times = [t[n].batch_time(big) for n in (1, 2, 4, 8)]
    assert times == sorted(times, reverse=True)
    assert times[1] > times[0] / 2  # the all-reduces and the per-layer overhead do not split
    # the link's cost grows with the tokens; over PCIe it is far larger than over NVLink
    assert t[4].comm_time(big) > t[4].comm_time(small) > 0
    pcie = analytic_model(model, get_gpu("l40s"), tp=4)
    assert pcie.comm_time(big) > 5 * t[4].comm_time(big)


def test_a_mesh_link_gives_a_small_group_fewer_links():
    mi = get_gpu("mi300x")
    assert mi.link_bw_at(2) == pytest.approx(mi.link_bw / 7)
    assert mi.link_bw_at(8) == pytest.approx(mi.link_bw)
    assert get_gpu("h100-80gb").link_bw_at(2) == get_gpu("h100-80gb").link_bw


def test_kv_pool_under_tensor_parallelism():
    from llmsched.errors import UserError

    model, gpu = get_model("llama-3.1-70b"), get_gpu("h100-80gb")
    with pytest.raises(UserError, match="does not fit on h100-80gb"):
        kv_blocks(model, gpu)
    two, four = kv_blocks(model, gpu, tp=2), kv_blocks(model, gpu, tp=4)
    assert two > 0 and four > 2 * two  # the weights' share shrinks as well as the KV's
    # the measured pool stands for one GPU only
    assert kv_blocks(get_model("mistral-7b"), get_gpu("rtx6000ada"), tp=2) != PAPER_BLOCKS


def test_tp_degrees_vllm_refuses():
    assert get_model("qwen2.5-32b").check_tp(3) is not None  # 40 heads
    assert get_model("qwen2.5-32b").check_tp(8) is None
    assert get_model("llama-3.1-70b").check_tp(16) is None  # KV heads replicated


def test_h100_factors_carried_to_the_paper_gpu_stay_near_its_measurement():
    """The error an estimate carries: the H100's factors on the RTX 6000 Ada against the paper's own points."""
    from llmsched.perf.roofline import H100

    m = analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"), H100.flops, H100.bw, H100.overhead_s, H100.kv_bw)
    assert mape(m) < 0.10


SHAPES = st.tuples(st.integers(0, 4096), st.floats(0, 1e8), st.integers(0, 10**6), st.integers(0, 64))


@given(shape=SHAPES, decodes=st.tuples(st.integers(0, 512), st.integers(0, 10**7)))
def test_batch_time_on_one_dense_gpu_is_the_terms_formula(shape, decodes):
    """The one-GPU dense roofline's inlined batch time is, to the bit, its terms put together."""
    m = analytic_model(get_model("llama-3.1-8b"), get_gpu("h100-80gb"))
    s = BatchShape(*shape, *decodes)
    expected = 0.0
    if s.tokens:
        gemms = math.hypot(m.flops(s) / m.flops_rate, m.weight_read_bytes(s) / m.bytes_rate)
        expected = m.overhead_s + gemms + m.kv_read_bytes(s) / m.kv_rate
    assert m.batch_time(s) == expected


@given(
    model=st.sampled_from(["llama-3.1-8b", "llama-3.1-70b", "mixtral-8x7b"]),
    tp=st.sampled_from([1, 2, 8]),
    chunks=st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 8192)), max_size=4),
    decodes=st.lists(st.integers(1, 8192), max_size=64),
)
def test_min_batch_time_bounds_every_batch(model, tp, chunks, decodes):
    """The floor the cluster relies on to run a replica late (`SimEngine.quiet_until`) is below every batch's time."""
    m = analytic_model(get_model(model), get_gpu("h100-80gb"), tp=tp)
    shape = BatchShape.of(chunks, decodes)
    if shape.tokens:
        assert 0 < m.min_batch_time() <= m.batch_time(shape)
