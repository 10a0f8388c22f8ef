"""Statistics over repeated runs."""

from __future__ import annotations

import pytest

from llmsched.metrics import leave_one_out


def test_leave_one_out_is_each_runs_miss_against_the_others_median() -> None:
    runs = [{"a": 100.0, "b": 1.0}, {"a": 110.0, "b": 2.0}, {"a": 90.0, "b": None}]
    out = leave_one_out(runs, ("a", "b"))
    # 100 vs median(110, 90) = 100: 0; 110 vs 95: 0.158; 90 vs 105: 0.143 -> median 0.143
    assert out["a"] == pytest.approx(15 / 105)
    assert out["b"] is None
    assert leave_one_out(runs[:1], ("a",)) == {"a": None}
