"""FasterTransformer: request-level static batching. A batch of whole prompts is admitted only when no
request is running; then decode-only iterations until every request of the batch has finished. Each
request reserves max_model_len tokens of KV."""

from llmsched.policies.batch import BatchBuilder, add_decodes_preempting
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class FasterTransformer(Policy):
    name = "fastertransformer"
    reserve_max_len = True
    sarathi_rules = True  # the reference's port; it reserves max_model_len, so rule (a) never binds
    defaults = {"token_budget": 1 << 30, "max_num_seqs": 8}

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view, reserve_max_len=True, sarathi_rules=self.sarathi_rules)
        if view.running:
            add_decodes_preempting(b, view.running)
        else:
            b.admit_waiting(view.waiting, whole=True)
        return b.plan

    def repeats(self, view: EngineView) -> bool:
        return True  # decodes only until the batch has finished, whatever waits
