"""Trace CSVs with the Sarathi/Vidur columns `num_prefill_tokens,num_decode_tokens[,arrived_at]`."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from llmsched.errors import UserError

# Traces shipped in the package, by the name `--trace` takes (a path otherwise); see data/README.md.
BUILTIN_TRACES = {
    "paper": "sharegpt4_llama2.csv",  # the paper's: Openchat ShareGPT4 lengths as Sarathi-Serve released them
    "sharegpt-v3": "sharegpt_v3_mistral.csv",  # ShareGPT V3 tokenized for Mistral-7B (shorter prompts)
}
DEFAULT_TRACE = "paper"
REQUIRED = ("num_prefill_tokens", "num_decode_tokens")


@dataclass(frozen=True, slots=True)
class TraceRow:
    prompt_len: int
    decode_len: int
    arrived_at: float | None = None
    prefix_ids: tuple[int, ...] = ()  # see Request.prefix_ids
    prefix_block: int = 0


def builtin_trace_path(name: str = DEFAULT_TRACE) -> Path:
    return Path(str(resources.files("llmsched.workload") / "data" / BUILTIN_TRACES[name]))


def has_arrivals(trace: str | Path | None) -> bool:
    """The trace has an `arrived_at` column (its header says so; the rows are checked when loaded), or is a Mooncake
    trace (timestamps on every line)."""
    path = trace_path(trace)
    if is_jsonl(path):
        return True
    try:
        with open(path, newline="") as f:
            return "arrived_at" in (csv.DictReader(f).fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False  # load_trace reports the file's problem


def is_jsonl(path: Path) -> bool:
    """A `.jsonl` file, or one whose first non-blank character opens a JSON object (a CSV header cannot): the
    Mooncake format (`workload.mooncake`)."""
    if path.suffix == ".jsonl":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(256).lstrip().startswith(b"{")
    except OSError:
        return False  # the loader reports it


def trace_path(trace: str | Path | None) -> Path:
    """A built-in trace's file by its name (None: the paper's), else the path given (`./paper` for a file so named)."""
    if trace is None or (isinstance(trace, str) and trace in BUILTIN_TRACES):
        return builtin_trace_path(trace or DEFAULT_TRACE)
    return Path(trace)


def load_trace(trace: str | Path | None) -> list[TraceRow]:
    """Read and validate a trace: a built-in one by name (None: the paper's), or a CSV file. Rows longer than a
    model's context are kept: the requests built from them are rejected one by one (`build_requests`). A file is
    parsed once per process while its size and modification time stay the same (a capacity search or a plan
    builds its workload for every run, and parsing the paper's trace took a quarter of a run's time)."""
    path = trace_path(trace)
    try:
        st = path.stat()
    except OSError as e:
        raise UserError(f"{path}: cannot read trace ({e.strerror or e})") from None
    return list(_parse(path, st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=8)
def _parse(path: Path, mtime_ns: int, size: int) -> tuple[TraceRow, ...]:
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
            rows = [_row(path, i + 2, rec, has_arrival) for i, rec in enumerate(reader)]
    except OSError as e:
        raise UserError(f"{path}: cannot read trace ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text CSV file") from None
    if not rows:
        raise UserError(f"{path}: no requests after the header")
    return tuple(rows)


def _row(path: Path, line: int, rec: dict, has_arrival: bool) -> TraceRow:
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
