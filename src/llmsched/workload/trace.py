"""Trace CSVs with the Sarathi/Vidur columns `num_prefill_tokens,num_decode_tokens[,arrived_at]`."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from llmsched.errors import UserError

BUILTIN_TRACE = "sharegpt_v3_mistral.csv"
REQUIRED = ("num_prefill_tokens", "num_decode_tokens")


@dataclass(frozen=True, slots=True)
class TraceRow:
    prompt_len: int
    decode_len: int
    arrived_at: float | None = None


def builtin_trace_path() -> Path:
    return Path(str(resources.files("llmsched.workload") / "data" / BUILTIN_TRACE))


def load_trace(path: str | Path | None, max_model_len: int | None = None) -> list[TraceRow]:
    """Read and validate a trace. `None` loads the built-in ShareGPT V3 workload."""
    path = Path(path) if path is not None else builtin_trace_path()
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if not header:
                raise UserError(f"{path}: empty file, expected a header with {','.join(REQUIRED)}")
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise UserError(f"{path}: missing column {missing[0]!r} (have: {','.join(header)})")
            has_arrival = "arrived_at" in header
            rows = [_row(path, i + 2, rec, has_arrival, max_model_len) for i, rec in enumerate(reader)]
    except OSError as e:
        raise UserError(f"{path}: cannot read trace ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file") from None
    if not rows:
        raise UserError(f"{path}: no requests after the header")
    return rows


def _row(path: Path, line: int, rec: dict, has_arrival: bool, max_model_len: int | None) -> TraceRow:
    def integer(col: str) -> int:
        text = (rec.get(col) or "").strip()
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{path}: line {line}: {col} is {text!r}, expected a positive integer") from None
        if not value.is_integer() or value <= 0:
            raise UserError(f"{path}: line {line}: {col} is {text!r}, expected a positive integer")
        return int(value)

    prompt, decode = integer("num_prefill_tokens"), integer("num_decode_tokens")
    if max_model_len is not None and prompt + decode > max_model_len:
        raise UserError(
            f"{path}: line {line}: num_prefill_tokens + num_decode_tokens = {prompt + decode} exceeds the "
            f"model's max length {max_model_len}"
        )
    arrived_at = None
    if has_arrival:
        text = (rec.get("arrived_at") or "").strip()
        try:
            arrived_at = float(text)
        except ValueError:
            raise UserError(f"{path}: line {line}: arrived_at is {text!r}, expected seconds") from None
        if not math.isfinite(arrived_at) or arrived_at < 0:
            raise UserError(f"{path}: line {line}: arrived_at is {text!r}, expected seconds >= 0")
    return TraceRow(prompt, decode, arrived_at)
