"""Write tests/data/paper_setting_first200.csv: the paper setting's first 200 requests as the reference's own code
paths make them, for tests/test_golden.py. Needs pandas (not a dependency of llmsched).

    python scripts/make_paper_golden.py

Written the reference's way, independently of llmsched's workload code:
- order and lengths: Sarathi-Serve's trace_request_length_generator, `pd.read_csv(trace).sample(frac=1,
  random_state=42)`, the rows taken in that order;
- arrivals at 1.6 QPS: Sarathi-Serve's poisson_request_interval_generator after `random.seed(42)`: each gap
  `min(-math.log(1.0 - random.random()) / qps, 3 / qps)`, added to the previous arrival, the first from 0;
- tiers: the paper authors' synthetic_request_generator, `np.random.default_rng(42)`, one `random() < 0.05`
  (strict, the paying tier) per request in arrival order.
"""

from __future__ import annotations

import csv
import math
import random
from importlib import resources

import numpy as np
import pandas as pd

QPS, SEED, N, PAYING = 1.6, 42, 200, 0.05
OUT = "tests/data/paper_setting_first200.csv"


def main() -> None:
    with resources.as_file(resources.files("llmsched.workload") / "data" / "sharegpt4_llama2.csv") as path:
        df = pd.read_csv(path).sample(frac=1, random_state=SEED)
    random.seed(SEED)
    t, rows = 0.0, []
    rng = np.random.default_rng(SEED)
    lengths = df[["num_prefill_tokens", "num_decode_tokens"]].values[:N]
    for row_index, (prompt, decode) in zip(df.index[:N], lengths, strict=True):
        t = t + min(-math.log(1.0 - random.random()) / QPS, 3.0 / QPS)
        rows.append((int(row_index), int(prompt), int(decode), repr(t), int(rng.random() < PAYING)))
    with open(OUT, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["trace_row", "num_prefill_tokens", "num_decode_tokens", "arrived_at", "strict"])
        w.writerows(rows)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
