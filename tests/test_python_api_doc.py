"""docs/python-api.md is run as written: its Python blocks in order, in one namespace, in a fresh folder; each block
followed by a text block must print exactly that text."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[1] / "docs" / "python-api.md"
BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str | None]]:
    """(code, the text it prints, or None where the doc shows none)."""
    found = BLOCK.findall(DOC.read_text())
    out: list[tuple[str, str | None]] = []
    for i, (kind, body) in enumerate(found):
        if kind == "python":
            after = found[i + 1] if i + 1 < len(found) else None
            out.append((body, after[1] if after and after[0] == "text" else None))
    return out


def test_the_doc_has_examples_with_their_output() -> None:
    b = blocks()
    assert len(b) >= 6 and all(expected is not None for _, expected in b)


def test_the_python_api_doc_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    for n, (code, expected) in enumerate(blocks(), 1):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{DOC.name} block {n}", "exec"), namespace)
        if expected is not None:
            assert printed.getvalue() == expected, f"block {n} printed:\n{printed.getvalue()}"
