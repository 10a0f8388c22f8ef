import os

import numpy as np
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


@pytest.fixture(scope="session")
def random_trace(tmp_path_factory):
    """A trace of n short random requests (prompts 50-399, decodes 2-59; seed 0), written once per n."""
    made: dict[int, str] = {}

    def make(n: int) -> str:
        if n not in made:
            rng = np.random.default_rng(0)
            path = tmp_path_factory.mktemp("trace") / f"small{n}.csv"
            rows = [f"{p},{d}" for p, d in zip(rng.integers(50, 400, n), rng.integers(2, 60, n), strict=True)]
            path.write_text("num_prefill_tokens,num_decode_tokens\n" + "\n".join(rows) + "\n")
            made[n] = str(path)
        return made[n]

    return make
