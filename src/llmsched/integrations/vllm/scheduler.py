"""vLLM v1 schedulers that take their decisions from llmsched policies (the simulator's policy objects).

    LLM(model, scheduler_cls="llmsched.integrations.vllm.SLAIScheduler",
        additional_config={"llmsched": {"tiers": "paying:0.05:tbt=0.1,free:0.95:tbt=0.5"}})

Each step: build a `VLLMView` of vLLM's queues (the waiting queue is mirrored incrementally, so a step costs
O(running + admitted), not O(waiting)), ask the policy for a `Plan`, then let vLLM's own
`Scheduler.schedule()` carry it out on a restricted picture of its state: its `running` list holds only the
planned running requests (decodes, then full prefill chunks, then a partial one), its waiting queue only the
planned admissions in plan order, and its token budget is the plan's token count. vLLM then allocates
blocks, builds the `SchedulerOutput` and does its own bookkeeping exactly as it would for its own choices;
afterwards the unplanned requests are put back in their places. Preemptions and rejections in the plan are
applied first (`_preempt_request`; rejections finish as FINISHED_IGNORED and are reported to the client).
After the batch, the policy's `on_batch_done` gets the batch that actually ran (the plan itself when vLLM ran
exactly it, else rebuilt from the SchedulerOutput), with wall-clock start and end times.

Why not build the SchedulerOutput ourselves: it carries block tables, encoder inputs, spec tokens, structured
output and connector metadata that vLLM keeps changing; restricting its inputs keeps all that vLLM's job.

Never fatal: an exception in our logic (view, policy, mapping) is logged once and that step is scheduled by
vLLM's own order; so is a step in which the policy plans nothing while requests are queued, and any state
the plugin does not model (KV connectors, spec decoding, paused engine, KV-holding waiting requests, requests
waiting for a grammar or streamed input).

Configuration, `additional_config={"llmsched": {...}}` (CLI `--additional-config`):
  policy (overrides the class's), options (policy knobs), tiers (as `--tiers`; TBT and priority per tier),
  default_tbt (0.2 s), watermark (fraction of KV blocks an admission leaves free, 0.01), record_steps (keep
  each step's {request id: tokens} in `step_log`, for the differential test), steps_out (a CSV file: each
  step's batch shape and times, `steps.StepFile`), perf_model (a profile CSV from `llmsched profile --backend
  vllm` or a fitted-model JSON: this engine's batch-time model, required by policies that size batches by time).
Per request: `SamplingParams(extra_args={"tier": "paying", "tbt": 0.1, "priority": 0})` (OpenAI API:
`vllm_xargs`); see `view.TierTable` for the defaults when absent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.request_queue import SchedulingPolicy, create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import RequestStatus

from llmsched.errors import UserError
from llmsched.integrations.vllm.steps import StepFile, step_shape
from llmsched.integrations.vllm.view import RequestView, RunningViews, TierTable, VLLMView
from llmsched.perf import get_model
from llmsched.perf.fitted import load_perf_model
from llmsched.policies import Plan, make_policy, needs_perf
from llmsched.policies.request_queue import WaitQueue
from llmsched.workload.tiers import DEFAULT_TBT

log = logging.getLogger("llmsched.vllm")
_WAITING = (RequestStatus.WAITING, RequestStatus.PREEMPTED)
_RUNNING = RequestStatus.RUNNING
# Neither running nor finished: what may sit in the waiting queue (one set lookup instead of two calls).
_QUEUED = frozenset(s for s in RequestStatus if s != RequestStatus.RUNNING and not RequestStatus.is_finished(s))


def engine_perf_model(path: str | None, model: str) -> Any:
    """The batch-time model of this engine (`perf_model`), fitted for `model` (its directory's name)."""
    if not path:
        raise UserError("this policy sizes batches by time: give additional_config llmsched.perf_model")
    return load_perf_model(path, get_model(model).name)


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
        options = dict(cfg.get("options", {}))
        if needs_perf(self.policy_name) and "perf" not in options:
            options["perf"] = engine_perf_model(cfg.get("perf_model"), self.vllm_config.model_config.model)
        self.llm_policy = make_policy(self.policy_name, **options)
        self.tiers = TierTable.from_spec(cfg.get("tiers"), float(cfg.get("default_tbt", DEFAULT_TBT)))
        self.watermark = float(cfg.get("watermark", 0.01))
        self.record_steps = bool(cfg.get("record_steps", False))
        self.step_log: list[dict[str, int]] = []
        self.step_file = StepFile(str(cfg["steps_out"])) if cfg.get("steps_out") else None
        self.stats = {
            "steps": 0, "policy_steps": 0, "fallback_steps": 0, "mismatched_steps": 0, "rejected": 0, "resyncs": 0,
        }  # fmt: skip
        self._views: dict[str, RequestView] = {}
        # vLLM's waiting queue as RequestViews, kept in step with it by the hooks below (add, preempt, free,
        # admission), so a step costs O(running + admitted), not O(waiting).
        self._queue = WaitQueue()
        self._prefilling: dict[str, RequestView] = {}  # running requests not yet decoding (few)
        self._freed: list[str] = []
        self._seq = 0
        self._inflight: tuple[float, Plan | None, bool, set[str]] | None = None
        # The last finished step's times as the policy was given them (planning clock, on_batch_done's end), for
        # a step log that replays the policy exactly.
        self.step_clock: tuple[float, float] | None = None
        self._rejected: list[Any] = []
        self._logged: set[str] = set()
        self._engine_view: VLLMView | None = None  # built at the first step, then moved along (`VLLMView.at`)
        # Fixed at construction, so checked once (every step goes to vLLM's order then).
        self._unsupported = ""
        if self.connector is not None or self.ec_connector is not None:
            self._unsupported = "KV/EC connectors are not modelled"
        elif self.num_spec_tokens > 0:
            self._unsupported = "speculative decoding is not modelled"

    # --- requests ----------------------------------------------------------------------------------------
    def add_request(self, request: Any) -> None:
        super().add_request(request)
        if self.requests.get(request.request_id) is request and request.status in _QUEUED:
            w = self._wrap(request)
            if w not in self._queue:
                self._queue.append(w)

    def _wrap(self, req: Any) -> RequestView:
        w = self._views.get(req.request_id)
        if w is None or w.req is not req:
            w = RequestView(req, self._seq, self.tiers, self.block_size)
            self._seq += 1
            self._views[req.request_id] = w
        return w

    def _preempt_request(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super()._preempt_request(request, *args, **kwargs)
        w = self._wrap(request)
        w.is_decoding = False
        self._prefilling.pop(request.request_id, None)
        if w not in self._queue:
            self._queue.push_front(w)

    def _free_request(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        w = self._views.get(request.request_id)
        if w is not None and w in self._queue:
            self._queue.remove(w)
        self._prefilling.pop(request.request_id, None)
        self._freed.append(request.request_id)  # the view object lives until the policy has seen the batch
        return super()._free_request(request, *args, **kwargs)

    def _resync(self) -> None:
        """Rebuild the mirrored queue from vLLM's (after a step in vLLM's own order, or a path not hooked)."""
        self.stats["resyncs"] += 1
        self._queue = WaitQueue()
        self._engine_view = None  # it reads the old queue
        for r in self.waiting:
            self._queue.append(self._wrap(r))
        self._prefilling = {}
        for r in self.running:
            w = self._wrap(r)
            w.refresh()
            if not w.is_decoding:
                self._prefilling[r.request_id] = w

    def _view(self, clock: float) -> VLLMView:
        pool = self.kv_cache_manager.block_pool
        running, free = RunningViews(self.running, self._wrap), pool.get_num_free_blocks()
        if self._engine_view is None:
            self._engine_view = VLLMView(
                clock=clock,
                running=running,
                waiting=self._queue.fcfs,
                free_blocks=free,
                total_blocks=pool.num_gpu_blocks - 1,  # block 0 is vLLM's null block
                block_size=self.block_size,
                watermark=self.watermark,
                token_budget=self.max_num_scheduled_tokens,
                max_num_seqs=self.max_num_running_reqs,
                max_model_len=self.max_model_len,
                by=self._queue.by,
                prefilling=self._prefilling.values(),
            )
            return self._engine_view
        return self._engine_view.at(clock, running, self._queue.fcfs, free, self._prefilling.values())

    # --- one step ----------------------------------------------------------------------------------------
    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self.stats["steps"] += 1
        start = time.monotonic()
        plan: Plan | None = None
        try:
            self._check_supported()
            if len(self._queue) != len(self.waiting):
                self._resync()
            plan = self.llm_policy.schedule(self._view(start))
            if not (plan.prefills or plan.decodes) and not plan.reject and (self.running or self.waiting):
                raise _Fallback("the policy planned nothing while requests are queued")
            saved, planned = self._apply(plan)
        except Exception as e:  # never stop the engine: this step goes to vLLM's own order
            self._log_once(type(e).__name__ + str(e)[:40], "llmsched: falling back to vLLM's order for a step: %r", e)
            plan = None
        if plan is None:
            decoding = {r.request_id for r in self.running if self._wrap(r).is_decoding}
            out = super().schedule(*args, **kwargs)
            self._resync()
            self.stats["fallback_steps"] += 1
            self._inflight = (start, None, False, decoding)
        else:
            try:
                out = super().schedule(*args, **kwargs)
            finally:
                self._restore(*saved)
            ran = out.num_scheduled_tokens
            if isinstance(planned, int):  # vLLM could only schedule running requests: count them
                matched = len(ran) == out.total_num_scheduled_tokens == planned
            else:
                matched = planned == ran
            if not matched:
                self.stats["mismatched_steps"] += 1
                self._log_once("mismatch", "llmsched: vLLM ran %s where the plan said %s", ran, planned)
            self.stats["policy_steps"] += 1
            self._inflight = (start, plan, matched, {w.req.request_id for w in plan.decodes} if not matched else set())
        if self.record_steps:
            self.step_log.append(dict(out.num_scheduled_tokens))
        if self.step_file is not None and out.num_scheduled_tokens:
            self.step_file.started(start, step_shape(self.requests, out.num_scheduled_tokens))
        return out

    def _check_supported(self) -> None:
        if self._unsupported:
            raise _Fallback(self._unsupported)
        if self.kv_holding_waiting:
            raise _Fallback("KV-holding waiting requests are not modelled")
        if self.deferred_waiting:  # vLLM itself must look at these to see them become ready
            raise _Fallback("requests waiting for a grammar, remote KV or streamed input are not modelled")
        if self._pause_state != PauseState.UNPAUSED:
            raise _Fallback("the engine is paused")

    def _apply(self, plan: Plan) -> tuple[tuple[list, Any, int, list], dict[str, int] | int]:
        """Carry out rejections and preemptions, then restrict vLLM's queues and budget to the plan;
        returns what `_restore` needs and the tokens planned per request id (an int n: one token for each
        of the n running requests)."""
        for w, reason in plan.reject:
            if w.req.status in _WAITING and w.req.num_computed_tokens == 0:
                log.warning("llmsched: request %s cannot be served: %s", w.req.request_id, reason)
                self._rejected.extend(self.finish_requests(w.req.request_id, RequestStatus.FINISHED_IGNORED))
                self.stats["rejected"] += 1
        for w in plan.preempt:
            if w.req.status == RequestStatus.RUNNING and w.req in self.running:
                self.running.remove(w.req)
                self._preempt_request(w.req, time.monotonic())
        saved = (self.running, self.waiting, self.max_num_scheduled_tokens, [])
        if len(plan.decodes) == len(self.running) and not (plan.prefills or plan.preempt or self._freed):
            # The steady state: one token for every running request (none left since the last step). vLLM's
            # running list is the plan as it stands; only its waiting queue is hidden.
            self.waiting = create_request_queue(SchedulingPolicy.FCFS)
            self.max_num_scheduled_tokens = len(self.running)
            return saved, len(self.running)
        decodes = [r for w in plan.decodes if (r := w.req).status is _RUNNING]
        planned = dict.fromkeys([r.request_id for r in decodes], 1)
        full, partial, admit = [], [], saved[3]
        for w, n in plan.prefills:
            if w.req.status == RequestStatus.RUNNING:
                (full if n >= w.remaining_prefill else partial).append(w.req)
            elif w.req.status in _WAITING:
                admit.append(w.req)
            else:
                continue
            planned[w.req.request_id] = n
        queue = create_request_queue(SchedulingPolicy.FCFS)
        for r in admit:
            queue.add_request(r)
        self.running, self.waiting = list(dict.fromkeys(decodes + full + partial)), queue
        self.max_num_scheduled_tokens = sum(planned.values())
        return saved, planned

    def _restore(self, running: list, waiting: Any, budget: int, admit: list) -> None:
        """After vLLM's step on the restricted queues: running in admission order (old, then newly admitted);
        the original waiting queue less the admitted, with what vLLM preempted in this step at the front."""
        if not admit and not self.waiting:  # none admitted, none preempted: the steady state
            self.running, self.waiting, self.max_num_scheduled_tokens = running, waiting, budget
            return
        left = list(self.waiting)  # planned admissions vLLM did not take, and requests it preempted (front)
        admitted = [r for r in admit if r.status is _RUNNING]
        preempted = len(left) > len(admit) - len(admitted)
        if preempted:
            running = [r for r in running if r.status is _RUNNING]
        self.running = running + admitted if admitted else running
        self.max_num_scheduled_tokens = budget
        for r in admitted:
            waiting.remove_request(r)
            w = self._views[r.request_id]
            if w in self._queue:
                self._queue.remove(w)
            w.refresh()
            if not w.is_decoding:
                self._prefilling[r.request_id] = w
        if preempted:
            admits = set(map(id, admit))
            waiting.prepend_requests(reversed([r for r in left if id(r) not in admits]))
        self.waiting = waiting

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
            start, plan, matched, decoding = self._inflight
            self._inflight = None
            self.step_clock = (start, end)
            try:
                if not matched:
                    plan = self._executed(scheduler_output, plan, decoding)
                for w, _ in plan.prefills:
                    w.refresh()
                    if w.is_decoding or w.finished:
                        self._prefilling.pop(w.req.request_id, None)
                self.llm_policy.on_batch_done(self._view(end), plan, start, end)
            except Exception as e:
                self._log_once("on_batch_done", "llmsched: policy on_batch_done failed: %r", e)
        for rid in self._freed:
            w = self._views.get(rid)
            if w is not None and w.req.is_finished():
                del self._views[rid]
        self._freed = []
        if self.step_file is not None:
            self.step_file.ended(time.monotonic(), bool(self.running or self.waiting))
        return outputs

    def _executed(self, out: Any, planned: Plan | None, decoding: set[str]) -> Plan:
        """The batch that ran, as a Plan (when it is not the plan). A planned decode that did not run but is
        still running is kept in the plan, so a policy that dequeued it (SLAI) queues it again instead of
        losing it."""
        plan = Plan()
        ran = out.num_scheduled_tokens
        for rid, n in ran.items():
            w = self._views.get(rid)
            if w is None:
                continue
            if rid in decoding:
                plan.decodes.append(w)
            else:
                plan.prefills.append((w, n))
        for rid in out.preempted_req_ids:
            if rid in self._views:
                plan.preempt.append(self._views[rid])
        for w in planned.decodes if planned is not None else ():
            if w.req.request_id not in ran and w.req.status == RequestStatus.RUNNING:
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
