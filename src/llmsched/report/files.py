"""Result files: a run's requests.csv, batches.csv and summary.json, and tables as CSV; each written to a
temporary name, then renamed, so a file is either whole or absent."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from llmsched.records import RunResult
from llmsched.workload.request import FINISHED

REQUEST_COLUMNS = (
    "id",
    "arrival_s",
    "tier",
    "prompt_tokens",
    "decode_tokens",
    "outcome",
    "reason",
    "ttft_ms",
    "e2el_ms",
    "max_itl_ms",
    "preemptions",
    "generated_tokens",
)
BATCH_COLUMNS = (
    "replica",
    "start_s",
    "duration_ms",
    "prefill_tokens",
    "prefills",
    "decodes",
    "kv_blocks_used",
    "waiting",
    "running",
    "preempted",
)


def write_outputs(out: Path, result: RunResult, summary: dict, token_times: bool = False) -> None:
    """requests.csv, batches.csv, summary.json (and tokens.csv: every token's time), each written to a
    temporary name then renamed."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in result.requests:
        t = r.token_times
        gaps = np.diff(t) if len(t) > 1 else None
        rows.append(
            (
                r.id,
                f"{r.arrival:.6f}",
                r.tier,
                r.prompt_len,
                r.decode_len,
                r.state,
                r.reason,
                f"{(t[0] - r.arrival) * 1e3:.3f}" if t and r.state == FINISHED else "",
                f"{(t[-1] - r.arrival) * 1e3:.3f}" if t and r.state == FINISHED else "",
                f"{gaps.max() * 1e3:.3f}" if gaps is not None else "",
                r.preemptions,
                r.generated,
            )
        )
    b = result.batches
    batch_rows = zip(
        b.replica,
        (f"{s:.6f}" for s in b.start),
        (f"{d * 1e3:.4f}" for d in b.duration),
        b.prefill_tokens,
        b.prefills,
        b.decodes,
        b.kv_blocks_used,
        b.waiting,
        b.running,
        b.preempted,
        strict=True,
    )
    _atomic_csv(out / "requests.csv", REQUEST_COLUMNS, rows)
    _atomic_csv(out / "batches.csv", BATCH_COLUMNS, batch_rows)
    if token_times:
        tokens = ((r.id, i, f"{t:.6f}") for r in result.requests for i, t in enumerate(r.token_times))
        _atomic_csv(out / "tokens.csv", ("id", "token", "time_s"), tokens)
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(out / "summary.json")


def _atomic_csv(path: Path, header: tuple, rows) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def write_csv(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
