"""Sarathi-Serve: stall-free, decode-first chunked prefill under a token budget.

1. Every running decode gets its token (preempting the newest running request when KV runs out).
2. Prefills already in progress continue, chunk = min(remaining, budget left).
3. New requests are admitted from the waiting queue, FCFS or shortest-prompt-first (`order="spf"`),
   while budget, KV and max_num_seqs allow.
"""

from llmsched.policies import order
from llmsched.policies.base import BatchBuilder, EngineView, Plan, Policy, add_decodes_preempting


class Sarathi(Policy):
    name = "sarathi"
    defaults = {"token_budget": 512, "max_num_seqs": 128}

    def __init__(self, order: str = "fcfs") -> None:
        if order not in ("fcfs", "spf"):
            raise ValueError(f"order is {order!r}, expected fcfs or spf")
        self.order = order

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view)
        add_decodes_preempting(b, view.running)
        for r in view.running:
            if not r.is_decoding and r.id not in b.preempted and b.room > 0:
                b.add_chunk(r)
        b.admit_waiting(view.waiting_by(order.spf) if self.order == "spf" else view.waiting)
        return b.plan
