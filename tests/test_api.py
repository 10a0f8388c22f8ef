"""The Python API: its names load lazily from `llmsched`, none is shadowed by a subpackage, bad input is a UserError
before anything runs, and every result's records are flat (what a DataFrame takes)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import llmsched
from llmsched import api


def test_no_api_name_is_a_subpackage_of_llmsched() -> None:
    parts = {m.name for m in pkgutil.iter_modules(llmsched.__path__)}
    assert not set(api.__all__) & parts
    from importlib import import_module

    for part in parts:  # importing a subpackage sets an attribute of llmsched: it must not hide an API name
        import_module(f"llmsched.{part}")
    assert all(getattr(llmsched, name) is getattr(api, name) for name in api.__all__)


def test_the_command_line_does_not_load_the_api() -> None:
    code = "import sys, llmsched.cli; llmsched.cli.register_commands(); print('llmsched.api' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: api.policy("slai", order="spf"), "policy 'slai'"),
        (lambda: api.policy("nope"), "unknown policy 'nope'"),
        (lambda: api.cluster("rtx6000ada:2,a100:2"), "'a100:2' names no GPU"),
        (lambda: api.cluster(2, router="fastest"), "--router is 'fastest'"),
        (lambda: api.spec("sarathi", gpu="a100"), "--gpu is 'a100'"),
        (lambda: api.spec("sarathi", api.WorkloadConfig(seed=-1)), "--seed is -1"),
        (lambda: api.spec("sarathi", ttft_slo=-1.0), "--ttft-slo is -1.0"),
        (lambda: api.sweep(api.spec("sarathi"), qps=[0.0], workers=1), "qps is [0.0]"),
        (lambda: api.capacity(api.spec("sarathi"), start_qps=-1, workers=1), "--start-qps must be positive"),
    ],
)
def test_bad_input_is_a_user_error(call, message: str) -> None:
    with pytest.raises(api.UserError, match=None) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


def flat(records: list[dict]) -> bool:
    return bool(records) and all(not isinstance(v, dict | list) for r in records for v in r.values())


def test_records_are_flat(random_trace) -> None:
    wl = api.WorkloadConfig(trace=random_trace(60), qps=4.0, tiers="paying:0.5:tbt=0.1,free:0.5:tbt=0.5")
    one = api.run(api.spec("sarathi", wl, cluster=api.cluster(2, router="jsq")))
    assert flat(one.to_records()) and len(one.to_records()) == 60
    assert {r["replica"] for r in one.to_records()} == {0, 1}
    sweep = api.sweep([api.spec("sarathi", wl), api.spec("slai", wl)], qps=[2.0, 4.0], workers=1)
    assert flat(sweep.to_records()) and [(r["policy"], r["qps"]) for r in sweep.to_records()] == [
        ("sarathi", 2.0),
        ("sarathi", 4.0),
        ("slai", 2.0),
        ("slai", 4.0),
    ]
    (cap,) = api.capacity(api.spec("sarathi", wl), granularity=0.2, max_rounds=3, workers=1)
    assert flat(cap.to_records()) and cap.qps == max((r["qps"] for r in cap.to_records() if r["meets_slo"]), default=0)


def test_prefix_caching_through_the_api() -> None:
    wl = api.WorkloadConfig(trace="sessions", num_sessions=30, qps=2.0, think_time=1.0)
    off = api.run(api.spec("sarathi", wl, cluster=api.cluster(2, router="prefix-affinity")))
    on = api.run(api.spec("sarathi", wl, cluster=api.cluster(2, router="prefix-affinity"), enable_prefix_caching=True))
    assert "prefix_cache_hit_rate" not in off.summary and all(r["cached_tokens"] is None for r in off.to_records())
    hits = sum(r["cached_tokens"] or 0 for r in on.to_records())
    assert hits == on.summary["prefix_cache_hits"] > 0
    assert all(r["prefix_cache_queries"] > 0 for r in on.summary["replicas"])
