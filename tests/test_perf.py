import pytest

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
