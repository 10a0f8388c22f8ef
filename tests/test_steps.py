"""Step files written inside a served replica's engine, and the speed factor read from them (no vLLM needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmsched.integrations.vllm.steps import StepFile, read_step_times, step_cycles, step_shape, write_step_times
from llmsched.perf.base import BatchShape
from llmsched.perf.measured import (
    InSequence,
    Jittered,
    Scaled,
    StepFitted,
    fit_to_steps,
    speed_factor,
    step_ratios,
    step_ratios_by_kind,
)


class Linear:
    name = "linear"

    def batch_time(self, shape: BatchShape) -> float:
        return 0.01 + 0.001 * shape.tokens


def test_step_shape_tells_decodes_from_chunks_after_vllm_advanced_the_counts():
    requests = {
        "a": SimpleNamespace(num_computed_tokens=101, num_output_tokens=3, num_output_placeholders=0),  # decode
        "b": SimpleNamespace(num_computed_tokens=64, num_output_tokens=0, num_output_placeholders=0),  # 1st chunk
        # a 1-token prompt is a prefill (async scheduling: this step's own placeholder)
        "c": SimpleNamespace(num_computed_tokens=1, num_output_tokens=0, num_output_placeholders=1),
        # async scheduling: the first decode, planned while the prompt's last chunk (and its token) is in flight
        "d": SimpleNamespace(num_computed_tokens=41, num_output_tokens=0, num_output_placeholders=2),
    }
    shape = step_shape(requests, {"a": 1, "b": 64, "c": 1, "d": 1})
    assert shape == BatchShape.of([(64, 0), (1, 0)], [100, 40])


def test_a_busy_step_lasts_until_the_next_starts_and_an_idle_one_until_it_ended(tmp_path):
    path = tmp_path / "deep" / "rank0.csv"
    f = StepFile(str(path))
    s = BatchShape.of([], [10, 20])
    for start, end, busy in ((1.0, 1.5, True), (1.7, 2.0, False), (5.0, 5.25, True), (5.5, 5.75, False)):
        f.started(start, s)
        f.ended(end, busy)
    f.ended(9.0, True)  # no step in flight: nothing written
    cycles = step_cycles(str(path), 0.0, 10.0)
    assert [c for c, _ in cycles] == pytest.approx([0.7, 0.3, 0.5, 0.25])
    assert all(shape == s for _, shape in cycles)
    assert [c for c, _ in step_cycles(str(path), 4.0, 10.0)] == pytest.approx([0.5, 0.25])
    StepFile(str(path)).started(20.0, s)  # a restarted engine appends, without a second header
    assert path.read_text().count("start") == 1


def test_step_times_read_back_in_order_in_seconds(tmp_path):
    steps = [(BatchShape.of([(64, 512)], [300] * 3), 81.25), (BatchShape.of([], [40, 90]), 12.5)]
    write_step_times(tmp_path / "s.csv", steps)
    assert read_step_times(tmp_path / "s.csv") == [(ms / 1e3, shape) for shape, ms in steps]
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary file left


def test_speed_factor_is_the_median_ratio_and_scaling_by_it_fits_the_steps():
    model = Linear()
    shapes = [BatchShape.of([], [50] * k) for k in (1, 4, 8)]
    steps = [(1.3 * model.batch_time(s), s) for s in shapes] + [(10.0, shapes[0])]  # one outlier
    f = speed_factor(steps, model)
    assert abs(f - 1.3) < 1e-9
    assert abs(Scaled(model, f).batch_time(shapes[2]) - steps[2][0]) < 1e-9
    assert speed_factor([], model) == 1.0


def test_fit_to_steps_recovers_a_factor_and_a_cost_per_sequence():
    model = Linear()
    shapes = [BatchShape.of([(c, 0)] if c else [], [300] * k) for c in (0, 64) for k in (1, 5, 12, 20)]
    truth = StepFitted(model, 1.4, 0.002)
    fitted = fit_to_steps(model, [(truth.batch_time(s), s) for s in shapes])
    assert abs(fitted.compute - 1.4) < 1e-9 and abs(fitted.per_seq - 0.002) < 1e-12
    # steps that get cheaper per sequence would need a negative cost: the factor alone is refitted
    falling = [(model.batch_time(s) - 0.0005 * s.decodes, s) for s in shapes]
    fallback = fit_to_steps(model, falling)
    assert fallback.per_seq == 0.0 and 0.5 < fallback.compute < 1.0
    with pytest.raises(ValueError):
        fit_to_steps(model, [])


def test_jittered_draws_the_measured_ratios_reproducibly():
    model, shape = Linear(), BatchShape.of([], [50] * 4)
    ratios = [0.9, 1.0, 2.0]
    times = [Jittered(model, ratios, seed=7).batch_time(shape) for _ in range(3)]
    assert len(set(times)) == 1  # same seed, same first draw
    j = Jittered(model, ratios, seed=7)
    drawn = {round(j.batch_time(shape) / model.batch_time(shape), 9) for _ in range(200)}
    assert drawn == set(ratios)
    assert step_ratios([(2 * model.batch_time(shape), shape)], model) == [2.0]
    with pytest.raises(ValueError):
        Jittered(model, [])


def test_jittered_by_kind_draws_prefill_steps_from_prefill_ratios():
    model = Linear()
    prefill, decode = BatchShape.of([(64, 0)], [50] * 2), BatchShape.of([], [50] * 4)
    measured = [(3 * model.batch_time(prefill), prefill), (1.5 * model.batch_time(decode), decode),
                (1.25 * model.batch_time(decode), decode)]  # fmt: skip
    kinds = step_ratios_by_kind(measured, model)
    assert kinds == {True: [3.0], False: [1.5, 1.25]}
    j = Jittered(model, kinds, seed=1)
    assert {round(j.batch_time(prefill) / model.batch_time(prefill), 9) for _ in range(50)} == {3.0}
    assert {round(j.batch_time(decode) / model.batch_time(decode), 9) for _ in range(50)} == {1.5, 1.25}
    only_decodes = Jittered(model, {False: [2.0]})  # a kind never measured borrows the other's
    assert only_decodes.batch_time(prefill) == pytest.approx(2 * model.batch_time(prefill))


def test_in_sequence_replays_each_kinds_ratios_in_measured_order():
    model = Linear()
    prefill, decode = BatchShape.of([(64, 0)], [50] * 2), BatchShape.of([], [50] * 4)
    s = InSequence(model, {True: [3.0, 2.0], False: [1.5, 1.25, 1.0]})
    got = [s.batch_time(x) / model.batch_time(x) for x in (decode, prefill, decode, decode, prefill, decode, prefill)]
    assert got == pytest.approx([1.5, 3.0, 1.25, 1.0, 2.0, 1.5, 3.0])  # each kind in order, cycling
    only_decodes = InSequence(model, {True: [], False: [2.0]})  # a kind never measured borrows the other's
    assert only_decodes.batch_time(prefill) == pytest.approx(2 * model.batch_time(prefill))
    with pytest.raises(ValueError):
        InSequence(model, {True: [], False: []})
