"""Batch-time models adjusted by an engine's measured steps (benchmarks of the real engine use them): a constant
speed factor, a factor plus a cost per sequence fitted to a step log, and measured step-to-step spread drawn at
random or replayed in order."""

from __future__ import annotations

import random
import statistics

import numpy as np

from llmsched.perf.base import BatchShape, PerfModel


class Scaled:
    """A batch-time model slowed (or sped up) by a constant factor: a machine's speed during one run."""

    def __init__(self, inner: PerfModel, factor: float) -> None:
        self.inner, self.factor, self.name = inner, factor, f"{inner.name} x {factor:.3f}"

    def batch_time(self, shape: BatchShape) -> float:
        return self.factor * self.inner.batch_time(shape)


class StepFitted:
    """A profiled batch-time model as an engine runs it in some setting: `compute` x the profile plus `per_seq`
    seconds per sequence in the batch. The profiler times each shape alone, back to back; an engine replaying or
    serving requests also turns every running request's token into an output each step, shares the host with its
    clients, and runs at whatever speed this machine has that hour. Fitted (`fit_to_steps`) to the step log of a
    probe run in that setting, other requests than the ones it then predicts."""

    def __init__(self, inner: PerfModel, compute: float, per_seq: float) -> None:
        self.inner, self.compute, self.per_seq = inner, compute, per_seq
        self.name = f"{inner.name} x {compute:.3f} + {per_seq * 1e3:.2f} ms per sequence"

    def batch_time(self, shape: BatchShape) -> float:
        return self.compute * self.inner.batch_time(shape) + self.per_seq * (shape.decodes + shape.num_prefills)


def fit_to_steps(model: PerfModel, steps: list[tuple[float, BatchShape]]) -> StepFitted:
    """Least squares of each measured step's time (seconds, shape) on (the model's time, sequences); a negative
    per-sequence cost refits the factor alone."""
    if not steps:
        raise ValueError("fit_to_steps needs at least one measured step")
    y = np.array([t for t, _ in steps])
    x = np.array([[model.batch_time(s), s.decodes + s.num_prefills] for _, s in steps])
    (compute, per_seq), *_ = np.linalg.lstsq(x, y, rcond=None)
    if per_seq < 0:
        compute, per_seq = x[:, 0] @ y / (x[:, 0] @ x[:, 0]), 0.0
    return StepFitted(model, float(compute), float(per_seq))


def step_ratios(steps: list[tuple[float, BatchShape]], model: PerfModel) -> list[float]:
    """Measured / predicted time of each measured step (seconds, shape)."""
    return [t / model.batch_time(s) for t, s in steps]


def speed_factor(steps: list[tuple[float, BatchShape]], model: PerfModel) -> float:
    """The median over measured steps of measured / predicted time; 1.0 with no steps."""
    ratios = step_ratios(steps, model)
    return statistics.median(ratios) if ratios else 1.0


def step_ratios_by_kind(steps: list[tuple[float, BatchShape]], model: PerfModel) -> dict[bool, list[float]]:
    """`step_ratios` split by whether the step ran a prefill chunk (True) or decodes only (False)."""
    kinds: dict[bool, list[float]] = {True: [], False: []}
    for (_, shape), ratio in zip(steps, step_ratios(steps, model), strict=True):
        kinds[shape.prefill_tokens > 0].append(ratio)
    return kinds


def _pools_by_kind(ratios: list[float] | dict[bool, list[float]], user: str) -> dict[bool, list[float]]:
    """Measured ratios for prefill-carrying (True) and decode-only (False) steps; one list serves both, and a kind
    nothing was measured for uses the other's."""
    pools = dict(ratios) if isinstance(ratios, dict) else {True: list(ratios), False: list(ratios)}
    if not any(pools.values()):
        raise ValueError(f"{user} needs at least one measured ratio")
    return {kind: pools.get(kind) or pools[not kind] for kind in (True, False)}


class Jittered:
    """A batch-time model times a ratio drawn, seeded, from measured step ratios (`step_ratios`): a machine's
    step-to-step spread, which a constant factor leaves out of the tails (p99 ITL is the slow steps).

    `ratios` is one pool, or one per step kind (`step_ratios_by_kind`): steps with a prefill chunk and
    decode-only steps stray from a profile differently (more compute per token against more per-sequence
    work), so each simulated step draws from its own kind; a kind nothing was measured for uses the other's."""

    def __init__(self, inner: PerfModel, ratios: list[float] | dict[bool, list[float]], seed: int = 0) -> None:
        self.pools = _pools_by_kind(ratios, "Jittered")
        self.inner, self._rng = inner, random.Random(seed)
        self.name = f"{inner.name} x measured spread"

    def batch_time(self, shape: BatchShape) -> float:
        return self._rng.choice(self.pools[shape.prefill_tokens > 0]) * self.inner.batch_time(shape)


class InSequence:
    """A batch-time model times measured step ratios taken in the order they were measured, one sequence per step
    kind (`step_ratios_by_kind`): the k-th simulated step of a kind gets the k-th ratio of that kind (cycling;
    a kind nothing was measured for uses the other's).

    This machine's slow spells last many steps (a fixed one-core load here ran at 1-1.9x its fastest time, in
    swings of seconds), and a queue built in a slow spell is what makes the TTFT tail; ratios drawn one by one
    (`Jittered`) spread the spells thin. Replaying one measured run's sequence checks the simulator's scheduling
    and queueing against that run; it is no forecast. Stateful: one instance per simulation."""

    def __init__(self, inner: PerfModel, ratios: dict[bool, list[float]]) -> None:
        self.pools = _pools_by_kind(ratios, "InSequence")
        self.taken = {True: 0, False: 0}
        self.inner, self.name = inner, f"{inner.name} x measured sequence"

    def batch_time(self, shape: BatchShape) -> float:
        kind = shape.prefill_tokens > 0
        pool, k = self.pools[kind], self.taken[kind]
        self.taken[kind] = k + 1
        return pool[k % len(pool)] * self.inner.batch_time(shape)
