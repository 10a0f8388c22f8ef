import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture
def write_trace(tmp_path):
    """Write a trace CSV from (prompt, decode[, arrival]) rows; returns its path as str."""

    def write(rows, header="num_prefill_tokens,num_decode_tokens", name="trace.csv"):
        path = tmp_path / name
        path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
        return str(path)

    return write
