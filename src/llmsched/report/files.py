"""Result files: a run's requests.csv, batches.csv and summary.json, and tables as CSV; each written to a
temporary name, then renamed, so a file is either whole or absent. Given the run's metadata
(studies/metadata.py), a JSON file carries it under "metadata" and a CSV file opens with it as `# key: value`
lines: `pandas.read_csv(path, comment="#")` reads the table (with the csv module, skip the lines starting with "#")."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from llmsched.records import RunResult
from llmsched.workload.request import FINISHED

REQUEST_COLUMNS = (
    "id",
    "replica",
    "gpu",
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
    "cached_tokens",  # prompt tokens served from the prefix cache at first admission; empty without prefix caching
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


def write_outputs(
    out: Path, result: RunResult, summary: dict, token_times: bool = False, meta: dict | None = None
) -> None:
    """requests.csv, batches.csv, summary.json (and tokens.csv: every token's time), each written to a
    temporary name then renamed; `meta` (studies/metadata.describe) heads each of them."""
    out.mkdir(parents=True, exist_ok=True)
    replica_of = {r.id: i for i, part in enumerate(getattr(result, "replicas", [])) for r in part.requests}
    gpus = [x["gpu"] for x in meta["replicas"]] if meta else []
    rows = []
    for r in result.requests:
        t = r.token_times
        gaps = np.diff(t) if len(t) > 1 else None
        replica = replica_of.get(r.id, 0)
        rows.append(
            (
                r.id,
                replica,
                gpus[replica] if replica < len(gpus) else "",
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
                "" if r.cached_tokens is None else r.cached_tokens,
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
    _atomic_csv(out / "requests.csv", REQUEST_COLUMNS, rows, meta)
    _atomic_csv(out / "batches.csv", BATCH_COLUMNS, batch_rows, meta)
    if token_times:
        tokens = ((r.id, i, f"{t:.6f}") for r in result.requests for i, t in enumerate(r.token_times))
        _atomic_csv(out / "tokens.csv", ("id", "token", "time_s"), tokens, meta)
    write_json(out / "summary.json", summary if meta is None else {**summary, "metadata": meta})


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _header(f, meta: dict | None) -> None:
    for key, value in (meta or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        f.write(f"# {key}: {text}\n")


def _atomic_csv(path: Path, header: tuple, rows, meta: dict | None = None) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        _header(f, meta)
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def write_csv(rows: list[dict], path: Path, meta: dict | None = None) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        _header(f, meta)
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
