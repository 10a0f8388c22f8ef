"""A trace file in any format llmsched reads: Mooncake JSONL (by suffix or content) or a Sarathi/Vidur CSV."""

from __future__ import annotations

from pathlib import Path

from llmsched.workload.mooncake import load_mooncake
from llmsched.workload.trace import TraceRow, is_jsonl, load_trace, trace_path


def load_rows(trace: str | Path | None) -> list[TraceRow]:
    """The rows of a trace: a built-in one by name (None: the paper's), a Mooncake JSONL or a CSV file."""
    path = trace_path(trace)
    return load_mooncake(path) if is_jsonl(path) else load_trace(trace)
