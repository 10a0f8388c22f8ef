"""vLLM v0: prefill-prioritising, whole prompts. If any arrived request can be admitted, the batch is
prefill-only (whole prompts, FCFS, up to max_num_batched_tokens); otherwise all running requests decode,
preempting the newest by recompute when KV runs out."""

from llmsched.policies.batch import BatchBuilder, add_decodes_preempting, admits_nothing
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class VLLMv0(Policy):
    name = "vllm"
    sarathi_rules = True  # the reference's port of vLLM v0 runs on Sarathi-Serve's block manager
    defaults = {"token_budget": 8192, "max_num_seqs": 128}

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view, sarathi_rules=self.sarathi_rules)
        b.admit_waiting(view.waiting, whole=True)
        if b.plan.prefills:
            return b.plan
        add_decodes_preempting(b, view.running)
        return b.plan

    def repeats(self, view: EngineView) -> bool:
        return admits_nothing(view)  # whole prompts: nothing in progress; every running decode again
