"""Each engine step's batch shape and times, as CSV, from inside a served replica's engine-core process.

The plugin writes them when `additional_config["llmsched"]["steps_out"]` names a file (Ray Serve replicas: one
file per rank). They tell what the machine did during a served run: the time each batch shape really took,
which a benchmark holds against the profiled batch-time model (this CPU's speed drifts by tens of percent
between runs). Times are `time.monotonic()`, one clock for every process on the host.
"""

from __future__ import annotations

import csv
import os
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmsched.perf.base import BatchShape

FIELDS = ("start", "end", "busy", *BatchShape._fields)


def step_shape(requests: Mapping[str, Any], scheduled: Mapping[str, int]) -> BatchShape:
    """The shape of the batch vLLM's `schedule()` just made (it has advanced `num_computed_tokens` already).
    A request given one token that has output tokens, or an earlier step's output still in flight (async
    scheduling: more than this step's placeholder), is a decode."""
    chunks, decodes = [], []
    for rid, k in scheduled.items():
        r = requests[rid]
        context = r.num_computed_tokens - k
        if k == 1 and (r.num_output_tokens > 0 or r.num_output_placeholders > 1):
            decodes.append(context)
        else:
            chunks.append((k, context))
    return BatchShape.of(chunks, decodes)


class StepFile:
    """Appends one row per step: entering `schedule()`, leaving `update_from_output()`, whether work was left
    (then the engine loops at once, so the next step's start ends this step's cycle), and the batch shape.
    Rows are flushed whenever the engine runs out of work, so a reader sees every finished run whole. Steps end
    in the order they started (two may be in flight under async scheduling)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "a", newline="")  # noqa: SIM115 - open for the engine's lifetime
        self._csv = csv.writer(self._file)
        if self._file.tell() == 0:
            self._csv.writerow(FIELDS)
        self._pending: deque[tuple[float, BatchShape | None]] = deque()

    def started(self, start: float, shape: BatchShape | None) -> None:
        """A step was scheduled (`shape` None: an empty one, which gets no row)."""
        self._pending.append((start, shape))

    def ended(self, end: float, busy: bool) -> None:
        if not self._pending:
            return
        start, shape = self._pending.popleft()
        if shape is not None:
            self._csv.writerow([f"{start:.6f}", f"{end:.6f}", int(busy), *shape])
        if not busy:
            self._file.flush()


def step_cycles(path: str, since: float, until: float) -> list[tuple[float, BatchShape]]:
    """(seconds, shape) of the steps that started in [since, until]: a step that left work runs until the next
    step starts (the engine's whole loop: scheduling, forward pass, outputs, inputs); the last of a busy spell
    until `update_from_output()` returned."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if since <= float(r["start"]) <= until]
    out = []
    for k, r in enumerate(rows):
        start, end = float(r["start"]), float(r["end"])
        follows = k + 1 < len(rows) and r["busy"] == "1"
        cycle = float(rows[k + 1]["start"]) - start if follows else end - start
        out.append((cycle, BatchShape(*(float(r[f]) for f in BatchShape._fields))))
    return out


def write_step_times(path: str | Path, steps: Iterable[tuple[BatchShape, float]]) -> None:
    """Steps as (shape, milliseconds), one row each: BatchShape fields and step_ms, the format of
    `bench-engine --steps-out` and `profile --steps-out`; written to a temporary file and renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*BatchShape._fields, "step_ms"])
        w.writerows([*shape, round(ms, 4)] for shape, ms in steps)
    tmp.replace(path)


def read_step_times(path: str | Path) -> list[tuple[float, BatchShape]]:
    """(seconds, shape) of each row `write_step_times` wrote, in order."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [(float(r["step_ms"]) / 1e3, BatchShape(*(float(r[k]) for k in BatchShape._fields))) for r in rows]
