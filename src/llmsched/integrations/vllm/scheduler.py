"""vLLM v1 schedulers that take their decisions from llmsched policies (the simulator's policy objects).

    LLM(model, scheduler_cls="llmsched.integrations.vllm.SLAIScheduler",
        additional_config={"llmsched": {"tiers": "paying:0.05:tbt=0.1,free:0.95:tbt=0.5"}})

Each step: build a `VLLMView` of vLLM's queues, ask the policy for a `Plan`, then let vLLM's own
`Scheduler.schedule()` carry it out on a restricted picture of its state: its `running` list holds only the
planned running requests (decodes, then full prefill chunks, then a partial one), its waiting queue only the
planned admissions in plan order, and its token budget is the plan's token count. vLLM then allocates
blocks, builds the `SchedulerOutput` and does its own bookkeeping exactly as it would for its own choices;
afterwards the unplanned requests are put back in their places. Preemptions and rejections in the plan are
applied first (`_preempt_request`; rejections finish as FINISHED_IGNORED and are reported to the client).
After the batch, the policy's `on_batch_done` gets the batch that actually ran (from the SchedulerOutput),
with wall-clock start and end times.

Why not build the SchedulerOutput ourselves: it carries block tables, encoder inputs, spec tokens, structured
output and connector metadata that vLLM keeps changing; restricting its inputs keeps all that vLLM's job.

Never fatal: an exception in our logic (view, policy, mapping) is logged once and that step is scheduled by
vLLM's own order; so is a step in which the policy plans nothing while requests are queued, and any state
the plugin does not model (KV connectors, spec decoding, paused engine, KV-holding waiting requests).

Configuration, `additional_config={"llmsched": {...}}` (CLI `--additional-config`):
  policy (overrides the class's), options (policy knobs), tiers (as `--tiers`; TBT and priority per tier),
  default_tbt (0.2 s), watermark (fraction of KV blocks an admission leaves free, 0.01), record_steps (keep
  each step's {request id: tokens} in `step_log`, for the differential test).
Per request: `SamplingParams(extra_args={"tier": "paying", "tbt": 0.1, "priority": 0})` (OpenAI API:
`vllm_xargs`); see `view.TierTable` for the defaults when absent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from vllm.v1.core.sched.request_queue import SchedulingPolicy, create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import RequestStatus

from llmsched.integrations.vllm.view import RequestView, TierTable, VLLMView
from llmsched.policies import Plan, make_policy
from llmsched.workload.tiers import DEFAULT_TBT

log = logging.getLogger("llmsched.vllm")
_WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
# Statuses of requests vLLM's scheduler skips while they wait (grammar, remote KV, streaming input).
_BLOCKED = frozenset(
    (
        RequestStatus.WAITING_FOR_STRUCTURED_OUTPUT_GRAMMAR,
        RequestStatus.WAITING_FOR_REMOTE_KVS,
        RequestStatus.WAITING_FOR_STREAMING_REQ,
    )
)
# Neither running nor finished: what may sit in the waiting queue (one set lookup instead of two calls).
_QUEUED = frozenset(s for s in RequestStatus if s != RequestStatus.RUNNING and not RequestStatus.is_finished(s))


class _Fallback(Exception):
    """This step goes to vLLM's own order (reason in the message)."""


class PolicyScheduler(Scheduler):
    """A vLLM scheduler whose decisions come from `llmsched.policies.make_policy(policy_name)`."""

    policy_name = "slai"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        extra = self.vllm_config.additional_config
        cfg = dict(extra.get("llmsched", {})) if isinstance(extra, dict) else {}
        self.policy_name = str(cfg.get("policy", self.policy_name))
        self.llm_policy = make_policy(self.policy_name, **dict(cfg.get("options", {})))
        self.tiers = TierTable.from_spec(cfg.get("tiers"), float(cfg.get("default_tbt", DEFAULT_TBT)))
        self.watermark = float(cfg.get("watermark", 0.01))
        self.record_steps = bool(cfg.get("record_steps", False))
        self.step_log: list[dict[str, int]] = []
        self.stats = {"steps": 0, "policy_steps": 0, "fallback_steps": 0, "mismatched_steps": 0, "rejected": 0}
        self._views: dict[str, RequestView] = {}
        self._freed: list[str] = []
        self._seq = 0
        self._inflight: tuple[float, dict[str, int] | None, dict[str, bool]] | None = None
        self._rejected: list[Any] = []
        self._logged: set[str] = set()

    # --- requests ----------------------------------------------------------------------------------------
    def add_request(self, request: Any) -> None:
        super().add_request(request)
        self._wrap(request)

    def _wrap(self, req: Any) -> RequestView:
        w = self._views.get(req.request_id)
        if w is None or w.req is not req:
            w = RequestView(req, self._seq, self.tiers, self.block_size)
            self._seq += 1
            self._views[req.request_id] = w
        return w

    def _free_request(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self._freed.append(request.request_id)  # the view object lives until the policy has seen the batch
        return super()._free_request(request, *args, **kwargs)

    def _view(self, clock: float) -> VLLMView:
        pool = self.kv_cache_manager.block_pool
        views, wrap = self._views, self._wrap
        # Inlined _wrap: this runs over every waiting request at every step.
        return VLLMView(
            clock=clock,
            running=[self._wrap(r) for r in self.running],
            waiting=[
                v if (v := views.get(r.request_id)) is not None and v.req is r else wrap(r)
                for r in self.waiting
                if r.status not in _BLOCKED
            ],
            free_blocks=pool.get_num_free_blocks(),
            total_blocks=pool.num_gpu_blocks - 1,  # block 0 is vLLM's null block
            block_size=self.block_size,
            watermark=self.watermark,
            token_budget=self.max_num_scheduled_tokens,
            max_num_seqs=self.max_num_running_reqs,
            max_model_len=self.max_model_len,
        )

    # --- one step ----------------------------------------------------------------------------------------
    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self.stats["steps"] += 1
        start = time.monotonic()
        running, waiting, budget = list(self.running), list(self.waiting), self.max_num_scheduled_tokens
        decoding = {r.request_id: self._wrap(r).is_decoding for r in running}
        planned: dict[str, int] | None = None
        try:
            self._check_supported()
            view = self._view(start)
            plan = self.llm_policy.schedule(view)
            if not (plan.prefills or plan.decodes) and not plan.reject and (view.running or view.waiting):
                raise _Fallback("the policy planned nothing while requests are queued")
            planned = self._apply(plan)
        except Exception as e:  # never stop the engine: this step goes to vLLM's own order
            self._log_once(type(e).__name__ + str(e)[:40], "llmsched: falling back to vLLM's order for a step: %r", e)
            self._restore(running, waiting, budget)
            planned = None
        try:
            out = super().schedule(*args, **kwargs)
        finally:
            if planned is not None:
                self.max_num_scheduled_tokens = budget
                self._merge(running, waiting)
        self.stats["policy_steps" if planned is not None else "fallback_steps"] += 1
        if planned is not None and planned != out.num_scheduled_tokens:
            self.stats["mismatched_steps"] += 1
            self._log_once(
                "mismatch", "llmsched: vLLM ran %s where the plan said %s", out.num_scheduled_tokens, planned
            )
        if self.record_steps:
            self.step_log.append(dict(out.num_scheduled_tokens))
        self._inflight = (start, planned, decoding)
        return out

    def _check_supported(self) -> None:
        from vllm.v1.core.sched.interface import PauseState

        if self.connector is not None or self.ec_connector is not None:
            raise _Fallback("KV/EC connectors are not modelled")
        if self.kv_holding_waiting or self.num_spec_tokens > 0:
            raise _Fallback("KV-holding waiting requests or speculative decoding are not modelled")
        if self._pause_state != PauseState.UNPAUSED:
            raise _Fallback("the engine is paused")

    def _apply(self, plan: Plan) -> dict[str, int]:
        """Carry out rejections and preemptions, then restrict vLLM's queues and budget to the plan."""
        for w, reason in plan.reject:
            if w.req.status in _WAITING and w.req.num_computed_tokens == 0:
                log.warning("llmsched: request %s cannot be served: %s", w.req.request_id, reason)
                self._rejected.extend(self.finish_requests(w.req.request_id, RequestStatus.FINISHED_IGNORED))
                self.stats["rejected"] += 1
        now = time.monotonic()
        for w in plan.preempt:
            if w.req.status == RequestStatus.RUNNING and w.req in self.running:
                self.running.remove(w.req)
                self._preempt_request(w.req, now)
        planned: dict[str, int] = {}
        decodes = [w.req for w in plan.decodes if w.req.status == RequestStatus.RUNNING]
        planned.update((r.request_id, 1) for r in decodes)
        full, partial, admit = [], [], []
        for w, n in plan.prefills:
            if w.req.status == RequestStatus.RUNNING:
                (full if n >= w.remaining_prefill else partial).append(w.req)
            elif w.req.status in _WAITING:
                admit.append(w.req)
            else:
                continue
            planned[w.req.request_id] = n
        self.running = list(dict.fromkeys(decodes + full + partial))
        queue = create_request_queue(SchedulingPolicy.FCFS)
        for r in admit:
            queue.add_request(r)
        self.waiting = queue
        self.max_num_scheduled_tokens = sum(planned.values())
        return planned

    def _restore(self, running: list, waiting: list, budget: int) -> None:
        """vLLM's queues as they were, less what we finished, with what we preempted at the front."""
        self.max_num_scheduled_tokens = budget
        self.running = [r for r in running if r.status == RequestStatus.RUNNING]
        preempted = [r for r in running if r.status in _WAITING]
        self._set_waiting(preempted + [r for r in waiting if r.status in _QUEUED])

    def _merge(self, running: list, waiting: list) -> None:
        """After vLLM's step: running in admission order (old, then newly admitted); waiting with the
        requests preempted in this step at the front, then the rest in their old order."""
        was_waiting = {id(r) for r in waiting}
        admitted = [r for r in self.running if id(r) in was_waiting]
        self.running = [r for r in running if r.status == RequestStatus.RUNNING] + admitted
        preempted = [r for r in running if r.status in _WAITING]
        self._set_waiting(preempted + [r for r in waiting if r.status in _QUEUED])

    def _set_waiting(self, requests: list) -> None:
        queue = create_request_queue(self.policy)
        if self.policy == SchedulingPolicy.FCFS:
            queue.extend(dict.fromkeys(requests))
        else:
            for r in dict.fromkeys(requests):
                queue.add_request(r)
        self.waiting = queue

    # --- after the batch ---------------------------------------------------------------------------------
    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> dict[int, Any]:
        end = time.monotonic()
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        for req in self._rejected:  # tell the client: finished, no tokens (finish reason "length")
            eco = outputs.setdefault(req.client_index, EngineCoreOutputs())
            eco.outputs.append(
                EngineCoreOutput(request_id=req.request_id, new_token_ids=[], finish_reason=req.get_finished_reason())
            )
        self._rejected = []
        if self._inflight is not None:
            start, planned, decoding = self._inflight
            self._inflight = None
            try:
                plan = self._executed(scheduler_output, planned, decoding)
                self.llm_policy.on_batch_done(self._view(end), plan, start, end)
            except Exception as e:
                self._log_once("on_batch_done", "llmsched: policy on_batch_done failed: %r", e)
        for rid in self._freed:
            w = self._views.get(rid)
            if w is not None and w.req.is_finished():
                del self._views[rid]
        self._freed = []
        return outputs

    def _executed(self, out: Any, planned: dict[str, int] | None, decoding: dict[str, bool]) -> Plan:
        """The batch that ran, as a Plan. A planned decode that did not run but is still running is kept
        in the plan, so a policy that dequeued it (SLAI) queues it again instead of losing it."""
        plan = Plan()
        ran = out.num_scheduled_tokens
        for rid, n in ran.items():
            w = self._views.get(rid)
            if w is None:
                continue
            if decoding.get(rid, False):
                plan.decodes.append(w)
            else:
                plan.prefills.append((w, n))
        for rid in out.preempted_req_ids:
            if rid in self._views:
                plan.preempt.append(self._views[rid])
        for rid in planned or ():
            w = self._views.get(rid)
            if rid not in ran and w is not None and decoding.get(rid) and w.req.status == RequestStatus.RUNNING:
                plan.decodes.append(w)
        return plan

    def _log_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(msg + " (logged once)", *args)


class SLAIScheduler(PolicyScheduler):
    """SLAI: EDF on last schedulable times for decodes, SPF (paying tier first) for prefills."""

    policy_name = "slai"


class SarathiScheduler(PolicyScheduler):
    """Sarathi-Serve: decode-first, chunked prefills, FCFS admission."""

    policy_name = "sarathi"


class SPFScheduler(PolicyScheduler):
    """Sarathi-Serve with shortest-prompt-first admission."""

    policy_name = "sarathi-spf"
