"""Ctrl-C during the commands that run many simulations: the whole process group gets SIGINT (as from a terminal);
the command stops within seconds with exit status 130, one line on stderr, no worker traceback, no output files and
no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Each run simulates 20,000 requests: far longer than the time the command is given to stop.
COMMANDS = {
    "capacity": ["capacity", "--num-requests", "20000"],
    "compare": ["compare", "--num-requests", "20000", "--qps", "1,2"],
    "reproduce": ["reproduce", "--num-requests", "20000"],
    "capacity-on-ray": ["capacity", "--num-requests", "20000", "--backend", "ray"],
}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("name", COMMANDS)
def test_ctrl_c_stops_the_pool_at_once(name: str, tmp_path: Path) -> None:
    if name.endswith("ray"):
        pytest.importorskip("ray")
    out = tmp_path / "out"
    args = COMMANDS[name] + (["--out", str(out)] if not name.startswith("capacity") else []) + ["--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    p = subprocess.Popen(
        [sys.executable, "-m", "llmsched.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    seen = rest = b""
    try:
        while b"runs" not in seen:  # the progress bar: the pool is starting its workers
            chunk = os.read(p.stderr.fileno(), 256)
            assert chunk, f"{name} ended before its runs started: {seen.decode(errors='replace')}"
            seen += chunk
        time.sleep(1.0)  # workers importing or simulating
        assert p.poll() is None
        os.killpg(p.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, rest = p.communicate(timeout=60)
        stopped_s = time.monotonic() - t0
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    err = (seen + rest).decode(errors="replace")
    deadline = time.monotonic() + 10
    while group_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert p.returncode == 130, err
    assert stopped_s < 10, f"{name} took {stopped_s:.1f} s to stop"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.rstrip().endswith("llmsched: aborted")
    assert not out.exists()
    assert not group_alive(p.pid), "a worker outlived the command"
