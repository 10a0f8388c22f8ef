"""`llmsched serve` stops alike on SIGTERM (what systemd, Docker and Kubernetes send to the main process) and on
Ctrl-C (SIGINT to the whole process group): exit status 0, no stack dump, and no Ray or vLLM process left behind.

Slow (a real app on the tiny model: about a minute to start on 2 cores); run it under the heavy lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install 'llmsched[serve]')")
pytest.importorskip("vllm", reason="vllm is not installed (pip install 'llmsched[serve]')")

MARK = "LLMSCHED_SERVE_SIGNAL_MARK"


def marked_processes(mark: str) -> list[int]:
    """Processes started under this test: they inherit the mark through Ray and vLLM."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"{MARK}={mark}".encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from llmsched.integrations.vllm.models import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("serve") / "tiny"))


@pytest.mark.parametrize("how", ["SIGTERM to the process", "SIGINT to the group"])
def test_serve_stops_cleanly(tiny_model: str, how: str) -> None:
    mark = uuid.uuid4().hex
    env = {**os.environ, MARK: mark, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    args = ["serve", "--model", tiny_model, "--port", str(free_port()), "--replicas", "1"]
    p = subprocess.Popen(
        [sys.executable, "-m", "llmsched.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        for line in p.stderr:
            lines.append(line)
            if "listening on" in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert listening.wait(600), "serve did not start:\n" + "".join(lines[-30:])
        if how.startswith("SIGTERM"):
            p.send_signal(signal.SIGTERM)
        else:
            os.killpg(p.pid, signal.SIGINT)
        code = p.wait(120)
        reader.join(10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.monotonic() + 60
        while (left := marked_processes(mark)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:  # do not leave them to the next test, then fail
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    err = "".join(lines)
    assert code == 0, err
    assert "llmsched serve: stopping" in err
    assert "SIGTERM received" not in err and "Traceback" not in err, err
    assert left == [], f"left behind: {left}"
