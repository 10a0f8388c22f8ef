"""The GPU and model catalog: sources, prices, tensor parallelism in a run, and what every run says of its batch
times (measured or estimated)."""

import re

import pytest

from llmsched.errors import UserError
from llmsched.perf.catalog import GPUS, PRICES, get_price
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec, batch_times_label, perf_provenance, validate
from llmsched.workload import WorkloadConfig


def test_every_gpu_has_a_link_and_a_dated_price():
    assert {"h100-80gb", "h200", "a100-80gb", "l40s", "a10g", "rtx6000ada", "mi300x"} <= set(GPUS)
    for name, gpu in GPUS.items():
        assert gpu.link and gpu.link_bw > 0 and gpu.link_latency_s > 0
        price = PRICES[name]
        assert price.usd_per_hour > 0 and re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.date) and price.source
    with pytest.raises(UserError, match="no catalog price"):
        get_price("tpu-v5")


@pytest.mark.parametrize(
    "model, gpu, tp, kind",
    [
        ("mistral-7b", "rtx6000ada", 1, "measured"),  # the paper's chunk sweep
        ("llama-3-8b", "h100-80gb", 1, "measured"),  # the shipped fit
        ("llama-3-8b", "h100-80gb", 2, "estimated"),  # the profile is of one GPU
        ("llama-3.1-70b", "h100-80gb", 4, "estimated"),
        ("mistral-7b", "a100-80gb", 1, "estimated"),  # a spec sheet with the H100's efficiency
        ("llama-3-8b", "rtx6000ada", 1, "estimated"),
    ],
)
def test_batch_times_say_whether_they_are_measured(model, gpu, tp, kind):
    spec = RunSpec(model=model, gpu=gpu, tensor_parallel=tp)
    assert perf_provenance(spec)[0] == kind
    label = batch_times_label(spec)
    assert label.startswith(kind + ":")
    assert ("TP" in label) == (tp > 1)


def test_a_cluster_with_one_estimated_replica_is_estimated():
    spec = RunSpec(model="mistral-7b", gpu="rtx6000ada", replicas="rtx6000ada:1,a100-80gb:1")
    assert batch_times_label(spec).startswith("estimated:")


@pytest.mark.parametrize(
    "tp, model, message",
    [
        (3, "qwen2.5-32b", "40 attention heads"),
        (9, "llama-3.1-70b", "expected 1 to 8"),
        (1, "llama-3.1-70b", "does not fit on h100-80gb"),
    ],
)
def test_bad_tensor_parallelism_is_a_user_error(tp, model, message):
    with pytest.raises(UserError, match=message):
        validate(RunSpec(model=model, gpu="h100-80gb", tensor_parallel=tp))


def test_a_tensor_parallel_run_uses_the_pool_and_times_of_its_gpus():
    wl = WorkloadConfig(num_requests=60, qps=2.0, arrival="poisson")
    one = RunSpec(model="llama-3.1-8b", gpu="l40s", workload=wl, time_limit=600)
    two = RunSpec(model="llama-3.1-8b", gpu="l40s", tensor_parallel=2, workload=wl, time_limit=600)
    _, s1 = run(one)
    _, s2 = run(two)
    assert s1["completed"] == s2["completed"] == 60
    assert s2["batch_times"].startswith("estimated:") and "PCIe" in s2["batch_times"]
    assert s2["median_tpot_ms"] != s1["median_tpot_ms"]
