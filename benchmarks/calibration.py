"""Calibration error of the Mistral-7B / RTX 6000 Ada roofline on the paper's 7 measured points, and the KV
pool estimated from memory against the reference's measured 14,733 blocks. Target: MAPE <= 5%.

    python benchmarks/calibration.py
"""

from __future__ import annotations

from llmsched.perf import analytic_model, get_gpu, get_model, kv_blocks
from llmsched.perf.catalog import estimated_kv_blocks
from llmsched.perf.paper_fit import chunk_sweep_ms, mape, paper_points


def main() -> None:
    model = analytic_model(get_model("mistral-7b"), get_gpu("rtx6000ada"))
    print(f"{'chunk':>6}{'measured ms':>13}{'model ms':>10}{'error':>8}")
    for p in paper_points():
        ms = chunk_sweep_ms(model, p.chunk)
        print(f"{p.chunk:>6}{p.batch_ms:>13.1f}{ms:>10.1f}{(ms - p.batch_ms) / p.batch_ms:>+8.1%}")
    print(f"MAPE {mape(model):.2%} (target <= 5%)")
    m, g = get_model("mistral-7b"), get_gpu("rtx6000ada")
    est = estimated_kv_blocks(m, g)
    print(f"KV pool estimated from memory: {est} blocks vs the reference's 14,733 ({est / 14733 - 1:+.2%});")
    print(f"the simulator uses the measured pool: {kv_blocks(m, g)} blocks")

if __name__ == "__main__":
    main()
