"""Orca: iteration-level batching without a token budget. Every iteration runs all running decodes plus
newly admitted whole prompts (FCFS), capped by max_num_seqs; each request reserves max_model_len tokens
of KV, so there is no preemption."""

from llmsched.policies.batch import BatchBuilder, add_decodes_preempting, admits_nothing
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class Orca(Policy):
    name = "orca"
    reserve_max_len = True
    sarathi_rules = True  # the reference's port; it reserves max_model_len, so rule (a) never binds
    defaults = {"token_budget": 1 << 30, "max_num_seqs": 8}

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view, reserve_max_len=True, sarathi_rules=self.sarathi_rules)
        add_decodes_preempting(b, view.running)
        b.admit_waiting(view.waiting, whole=True)
        return b.plan

    def repeats(self, view: EngineView) -> bool:
        return admits_nothing(view)  # whole prompts: nothing in progress; every running decode again
