"""Traces in the Mooncake format (FAST'25): JSONL, one object a line with `timestamp` (ms from the start),
`input_length`, `output_length` and `hash_ids`, one id per 512-token block of the prompt, each id a hash of the
whole prefix up to its block."""

from __future__ import annotations

import json
import math
from pathlib import Path

from llmsched.errors import UserError
from llmsched.workload.trace import TraceRow

MOONCAKE_BLOCK = 512  # tokens per hash id
FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")


def load_mooncake(path: Path) -> list[TraceRow]:
    """Rows in file order (the trace's own order: its prefix structure depends on it), `arrived_at` in seconds."""
    rows: list[TraceRow] = []
    last = 0.0
    try:
        with open(path, encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                row = _row(path, number, text)
                if row.arrived_at < last:
                    raise UserError(
                        f"{path}: line {number}: timestamp {row.arrived_at * 1e3:g} is before the previous line's "
                        f"{last * 1e3:g}, expected timestamps that do not decrease"
                    )
                last = row.arrived_at
                rows.append(row)
    except OSError as e:
        raise UserError(f"{path}: cannot read trace ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    if not rows:
        raise UserError(f"{path}: no requests, expected one JSON object a line with {', '.join(FIELDS)}")
    return rows


def _row(path: Path, line: int, text: str) -> TraceRow:
    where = f"{path}: line {line}"
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not JSON ({e.msg}), expected one object with {', '.join(FIELDS)}") from None
    if not isinstance(rec, dict):
        raise UserError(f"{where}: a JSON {type(rec).__name__}, expected an object with {', '.join(FIELDS)}")
    missing = [k for k in FIELDS if k not in rec]
    if missing:
        raise UserError(f"{where}: missing field {missing[0]!r} (have: {', '.join(rec) or 'none'})")
    prompt, output = _positive_int(where, rec, "input_length"), _positive_int(where, rec, "output_length")
    ts = rec["timestamp"]
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts) or ts < 0:
        raise UserError(f"{where}: timestamp is {ts!r}, expected milliseconds >= 0")
    ids = rec["hash_ids"]
    if not isinstance(ids, list) or not ids:
        raise UserError(f"{where}: hash_ids is {_short(ids)}, expected a non-empty list of block ids")
    if set(map(type, ids)) != {int} or min(ids) < 0:  # type, not isinstance: a bool is no block id
        raise UserError(f"{where}: hash_ids holds {_short(ids)}, expected integers >= 0")
    blocks = -(-prompt // MOONCAKE_BLOCK)
    if len(ids) != blocks:
        raise UserError(
            f"{where}: {len(ids)} hash_ids for input_length {prompt}, expected {blocks} "
            f"(one per {MOONCAKE_BLOCK}-token block)"
        )
    return TraceRow(prompt, output, ts / 1e3, tuple(ids), MOONCAKE_BLOCK)


def _positive_int(where: str, rec: dict, key: str) -> int:
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{where}: {key} is {_short(value)}, expected a positive integer")
    return value


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
