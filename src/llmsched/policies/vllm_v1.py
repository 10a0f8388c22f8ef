"""vLLM v1's default: one token budget shared by running requests first (decodes and unfinished prefill
chunks, in admission order) and then new requests from the waiting queue (FCFS, chunked). When KV runs
out the newest running request is preempted by recompute."""

from collections import deque

from llmsched.policies.batch import BatchBuilder, admits_nothing, newest_of
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.plan import Plan


class VLLMv1(Policy):
    name = "vllm-v1"
    sarathi_rules = False  # vLLM v1's own rules: a decode needs a free block only when its last is full
    defaults = {"token_budget": 2048, "max_num_seqs": 128}

    def schedule(self, view: EngineView) -> Plan:
        b = BatchBuilder(view)
        queue = deque(view.running)
        newest = newest_of(queue)
        while queue and b.room > 0:
            r = queue.popleft()
            if r.is_decoding:
                b.add_decode_preempting(r, newest)
            else:
                b.add_chunk(r)
        if not b.plan.preempt:  # vLLM v1 admits nothing new in a step that had to preempt
            b.admit_waiting(view.waiting)
        return b.plan

    def repeats(self, view: EngineView) -> bool:
        # every running decode again; a prefill in progress shares the budget in admission order, not after the decodes
        return admits_nothing(view) and all(r.is_decoding for r in view.running)
