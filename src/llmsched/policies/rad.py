"""RAD (Resource-Aware Dynamic), as this project reconstructs it (reference section 2.2; docs/rad.md).

The paper names two principles and proves RAD throughput-optimal; it publishes no algorithm. Here:
- Optimal tiling: every batch is filled to the tile b*, the token count that maximises tokens/s under
  the perf model and the KV pool (`llmsched.theory.optimal_tile`, computed once and passed in). Prefill
  chunks are cut to fill the tile exactly.
- Dynamic allocation: the split of each tile between decodes and prefill chunks is not fixed; it follows
  the queues. Every running decode gets its token (it can contribute only one), prefills in progress
  continue, and new requests are admitted FCFS while KV allows; whatever is left of the tile goes to
  prefill. A batch is smaller than the tile only when the queues hold less work (work-conserving).
When KV runs out the newest running request is preempted by recompute, as in the reference engines.
"""

from llmsched.policies.batch import BatchBuilder, admits_nothing, fill_decode_first
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class RAD(Policy):
    name = "rad"
    sarathi_rules = True  # its engine is Sarathi-Serve's, as the policies it is compared with
    # The tile is the budget; sequences are capped by the KV pool, not by a fixed count.
    defaults = {"token_budget": 1 << 30, "max_num_seqs": 1024}

    def __init__(self, tile: int = 512) -> None:
        if not isinstance(tile, int) or tile < 1:
            raise ValueError(f"tile is {tile!r}, expected a positive number of tokens")
        self.tile = tile

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view, budget=min(self.tile, view.token_budget), sarathi_rules=self.sarathi_rules)
        return fill_decode_first(b, view, view.waiting)

    def repeats(self, view: EngineView) -> bool:
        # every running decode again; a prefill in progress fills the tile, not the token budget
        return admits_nothing(view) and all(r.is_decoding for r in view.running)
