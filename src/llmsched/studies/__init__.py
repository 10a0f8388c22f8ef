"""What runs the simulator many times: a run's spec (`spec`, `run`), the executor that runs specs in parallel,
SLOs, capacity search, QPS grids, the theory's bounds for a spec and the paper's reproduction."""
