"""Sarathi-Serve: stall-free, decode-first chunked prefill under a token budget.

1. Every running decode gets its token (preempting the newest running request when KV runs out).
2. Prefills already in progress continue, chunk = min(remaining, budget left).
3. New requests are admitted from the waiting queue, FCFS or shortest-prompt-first (`order="spf"`),
   while budget, KV and max_num_seqs allow. With a prefix cache: `spf-uncached` (SPF on the part of the prompt
   not cached) or `lpm` (longest cached prefix first, ties FCFS: SGLang's order).
"""

from collections.abc import Iterable

from llmsched.policies import order as orders
from llmsched.policies.batch import BatchBuilder, fill_decode_first
from llmsched.policies.interface import EngineView, Policy, Req
from llmsched.policies.plan import Plan

ORDERS = ("fcfs", "spf", "spf-uncached", "lpm")


class Sarathi(Policy):
    name = "sarathi"
    sarathi_rules = True
    bulk_finishes = True  # keeps no state: with nothing waiting, the next batch is the remaining decodes and chunks
    defaults = {"token_budget": 512, "max_num_seqs": 128}

    def __init__(self, order: str = "fcfs") -> None:
        if order not in ORDERS:
            raise ValueError(f"order is {order!r}, expected one of {', '.join(ORDERS)}")
        self.order = order
        self._lpm = orders.longest_prefix(None, by_tier=False)

    def schedule(self, view: EngineView) -> Plan:
        rules = self.sarathi_rules
        if self.order == "spf":
            queue: Iterable[Req] = view.waiting_by(orders.spf_key(rules))
        elif self.order == "spf-uncached":
            queue = orders.by_cache(view, orders.uncached_key(rules, by_tier=False))
        elif self.order == "lpm":
            queue = orders.by_cache(view, self._lpm)
        else:
            queue = view.waiting
        return fill_decode_first(BatchBuilder(view, sarathi_rules=rules), view, queue)

    def repeats(self, view: EngineView) -> bool:
        return True  # stall-free batching keeps no state: decodes, chunks of what is left, then admissions
