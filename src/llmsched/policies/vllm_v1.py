"""vLLM v1's default: one token budget shared by running requests first (decodes and unfinished prefill
chunks, in admission order) and then new requests from the waiting queue (FCFS, chunked). When KV runs
out the newest running request is preempted by recompute."""

from llmsched.policies.batch import BatchBuilder
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class VLLMv1(Policy):
    name = "vllm-v1"
    defaults = {"token_budget": 2048, "max_num_seqs": 128}

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view)
        queue = list(view.running)
        while queue and b.room > 0:
            r = queue.pop(0)
            if not r.is_decoding:
                b.add_chunk(r)
                continue
            while not b.add_decode(r):
                if queue:
                    b.preempt(queue.pop())
                else:
                    b.preempt(r)
                    break
        if not b.plan.preempt:  # vLLM v1 admits nothing new in a step that had to preempt
            b.admit_waiting(view.waiting)
        return b.plan
