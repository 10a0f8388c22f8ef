"""The terminal summary says what is true at the precision it shows: goodput never reads above throughput, and an
SLO attainment below 1 never reads 1."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmsched.report.text import format_summary, fraction
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig


@pytest.fixture(scope="module")
def summary(random_trace) -> dict:
    tiers = "paying:0.5:tbt=0.1,free:0.5:tbt=0.5"
    return run(RunSpec(workload=WorkloadConfig(trace=random_trace(40), qps=4.0, tiers=tiers)))[1]


@given(st.floats(0, 1))
def test_a_fraction_is_cut_not_rounded(x):
    shown = fraction(x)
    value = float(shown.lstrip("<"))
    assert (shown == "1") == (x == 1) and (shown == "0") == (x == 0)
    assert value <= x or shown == "<0.001"
    assert x - value < 0.001


@given(throughput=st.floats(0.001, 1e4), share=st.floats(0, 1), attainment=st.floats(0, 1))
def test_goodput_never_reads_above_throughput(summary, throughput, share, attainment):
    s = {**summary, "request_throughput": throughput, "request_goodput": throughput * share}
    s["tiers"] = {name: {**t, "slo_attainment": attainment} for name, t in s["tiers"].items()}
    text = format_summary(s)
    shown_throughput, shown_goodput = (float(x) for x in re.search(r"throughput (\S+) .*goodput (\S+)", text).groups())
    assert shown_goodput <= shown_throughput
    for line in text.splitlines():
        if line.startswith("tier "):
            assert line.endswith(f"SLO attainment {fraction(attainment)}")
            assert attainment == 1 or not line.endswith("SLO attainment 1")
