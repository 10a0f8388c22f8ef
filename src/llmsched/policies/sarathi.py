"""Sarathi-Serve: stall-free, decode-first chunked prefill under a token budget.

1. Every running decode gets its token (preempting the newest running request when KV runs out).
2. Prefills already in progress continue, chunk = min(remaining, budget left).
3. New requests are admitted from the waiting queue, FCFS or shortest-prompt-first (`order="spf"`),
   while budget, KV and max_num_seqs allow.
"""

from llmsched.policies import order
from llmsched.policies.batch import BatchBuilder, fill_decode_first
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class Sarathi(Policy):
    name = "sarathi"
    sarathi_rules = True
    defaults = {"token_budget": 512, "max_num_seqs": 128}

    def __init__(self, order: str = "fcfs") -> None:
        if order not in ("fcfs", "spf"):
            raise ValueError(f"order is {order!r}, expected fcfs or spf")
        self.order = order

    def schedule(self, view: EngineView) -> Plan:
        queue = view.waiting_by(order.spf_key(self.sarathi_rules)) if self.order == "spf" else view.waiting
        return fill_decode_first(BatchBuilder(view, sarathi_rules=self.sarathi_rules), view, queue)
