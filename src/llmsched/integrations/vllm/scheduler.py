"""vLLM v1 schedulers that take their decisions from llmsched policies (the simulator's policy objects).

    LLM(model, scheduler_cls="llmsched.integrations.vllm.SLAIScheduler",
        additional_config={"llmsched": {"tiers": "paying:0.05:tbt=0.1,free:0.95:tbt=0.5"}})

On GPUs, where vLLM overlaps scheduling with the model's step (async scheduling), use the `Async...` classes
(`AsyncSLAIScheduler`, ...): they are the same schedulers on vLLM's `AsyncScheduler`.

Each step: build a `VLLMView` of vLLM's queues (the waiting queue is mirrored incrementally, so a step costs
O(running + admitted), not O(waiting)), ask the policy for a `Plan`, then let vLLM's own
`Scheduler.schedule()` carry it out on a restricted picture of its state: its `running` list holds only the
planned running requests (decodes, then full prefill chunks, then a partial one), its waiting queue only the
planned admissions in plan order, its token budget is the plan's token count, and each request is held to its
planned tokens. vLLM then allocates blocks (reusing its prefix cache), builds the `SchedulerOutput` and does its
own bookkeeping exactly as it would for its own choices; afterwards the unplanned requests are put back in their
places. Preemptions and rejections in the plan are applied first (`_preempt_request`; rejections finish as
FINISHED_IGNORED and are reported to the client). The policy's `on_batch_done` gets the batch that actually ran
(the plan itself when vLLM ran exactly it, else rebuilt from the SchedulerOutput), with wall-clock start and end
times, when its output is processed or, if vLLM schedules the next step first (async scheduling), just before
that step is planned: vLLM plans it as if the batch in flight had run. Preemptions made outside `schedule()`
(`reset_prefix_cache(reset_running_requests=True)`) are reported with the next batch, and the work the preempted
requests had in batches scheduled before it is dropped from those batches.

Why not build the SchedulerOutput ourselves: it carries block tables, encoder inputs, spec tokens, structured
output and connector metadata that vLLM keeps changing; restricting its inputs keeps all that vLLM's job.

Never fatal: an exception in our logic (view, policy, mapping) is logged once and that step is scheduled by
vLLM's own order; so is a step in which the policy plans nothing while requests are queued, and any state
the plugin does not model (KV connectors, spec decoding, paused engine, KV-holding waiting requests, requests
waiting for a grammar or streamed input).

Configuration, `additional_config={"llmsched": {...}}` (CLI `--additional-config`):
  policy (overrides the class's), options (policy knobs), tiers (as `--tiers`; TBT and priority per tier),
  default_tbt (0.2 s), watermark (fraction of KV blocks an admission leaves free, 0.01, or vLLM's `--watermark`
  if larger), record_steps (keep each step's {request id: tokens} in `step_log`, for the differential test),
  steps_out (a CSV file: each step's batch shape and times, `steps.StepFile`), perf_model (a profile CSV from
  `llmsched profile --backend vllm` or a fitted-model JSON: this engine's batch-time model, required by policies
  that size batches by time).
Per request: `SamplingParams(extra_args={"tier": "paying", "tbt": 0.1, "priority": 0})` (OpenAI API:
`vllm_xargs`); under `--scheduling-policy priority` vLLM's own request priority (`priority=` of `generate` /
`add_request`, the OpenAI `priority` field) is the request's priority unless extra_args give one; see
`view.TierTable` for the defaults when absent.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.interface import PauseState
from vllm.v1.core.sched.request_queue import SchedulingPolicy, create_request_queue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import RequestStatus

from llmsched.errors import UserError
from llmsched.integrations.vllm.prefix import PrefixLookup, count_prefix_cache
from llmsched.integrations.vllm.steps import StepFile, step_shape
from llmsched.integrations.vllm.view import RequestView, RunningViews, TierTable, VLLMView, vllm_priority_order
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


@dataclass(eq=False)
class _Batch:
    """A scheduled step whose output vLLM has not processed yet (two at a time under async scheduling)."""

    out: Any  # the SchedulerOutput
    step: int
    start: float
    plan: Plan | None  # None: a step in vLLM's own order
    matched: bool  # vLLM ran exactly `plan`
    decoding: set[str] = field(default_factory=set)  # request ids that were decoding, to rebuild the batch
    reported: bool = False  # the policy has seen it


def _runnable(r: Any) -> bool:
    """vLLM's running loop gives this request tokens now: it has one to compute, and (async scheduling) its
    steps in flight do not already reach max_tokens (vLLM skips those, scheduler.py's "avoid scheduling an extra
    step")."""
    p = r.num_output_placeholders
    if p and r.num_computed_tokens + 2 - p >= r.num_prompt_tokens + r.max_tokens:
        return False
    return r.num_tokens_with_spec + p > r.num_computed_tokens


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
        self._policy_options = options
        self.llm_policy = make_policy(self.policy_name, **options)
        self.tiers = TierTable.from_spec(cfg.get("tiers"), float(cfg.get("default_tbt", DEFAULT_TBT)))
        # vLLM refuses an admission that would dip into its own watermark: never plan one.
        self.watermark = max(float(cfg.get("watermark", 0.01)), float(self.scheduler_config.watermark))
        self.record_steps = bool(cfg.get("record_steps", False))
        self.step_log: list[dict[str, int]] = []
        self.step_file = StepFile(str(cfg["steps_out"])) if cfg.get("steps_out") else None
        self.stats = {
            "steps": 0, "policy_steps": 0, "fallback_steps": 0, "mismatched_steps": 0, "rejected": 0, "resyncs": 0,
            "cache_shortened_prefills": 0,
        }  # fmt: skip
        count_prefix_cache(self.kv_cache_manager, self.stats)
        self._lookup = PrefixLookup(self.kv_cache_manager) if self.kv_cache_manager.enable_caching else None
        self._by_priority = self.policy == SchedulingPolicy.PRIORITY
        # Steps overlap (async scheduling, or a batch queue deeper than one): a decode may be planned while its
        # previous token is in flight, which vLLM may skip.
        self._overlap = isinstance(self, AsyncScheduler) or self.vllm_config.max_concurrent_batches > 1
        if self.scheduler_config.async_scheduling and not isinstance(self, AsyncScheduler):
            log.warning("llmsched: async scheduling is on; use the Async... scheduler classes to keep its overlap")
        self._views: dict[str, RequestView] = {}
        # vLLM's waiting queue as RequestViews, kept in step with it by the hooks below (add, preempt, free,
        # admission), so a step costs O(running + admitted), not O(waiting).
        self._queue = WaitQueue()
        self._prefilling: dict[str, RequestView] = {}  # running requests not yet decoding (few)
        self._freed: list[tuple[int, str]] = []  # (step, request id): views dropped once no batch may name them
        self._left_running = False  # a request left the running list since the last step's plan
        self._oob: dict[str, tuple[int, RequestView]] = {}  # preempted outside schedule(): (last step, view)
        self._in_schedule = False
        self._seq = 0
        self._step = 0
        self._inflight: deque[_Batch] = deque()
        self._caps: dict[str, int] | None = None  # planned tokens per request, while vLLM schedules the plan
        # The last reported batch's times as the policy was given them (planning clock, on_batch_done's end), for
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

    def fresh_policy(self) -> None:
        """A new policy object, knowing nothing of the steps so far (SLAI's mean batch time): after a warm-up,
        whose first batches compile kernels, so the measured run's decisions are the ones a replay makes."""
        self.llm_policy = make_policy(self.policy_name, **self._policy_options)

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
            w = RequestView(req, self._seq, self.tiers, self.block_size, self._by_priority)
            self._seq += 1
            self._views[req.request_id] = w
        return w

    def _preempt_request(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super()._preempt_request(request, *args, **kwargs)
        w = self._wrap(request)
        w.is_decoding = False
        self._prefilling.pop(request.request_id, None)
        self._left_running = True
        if w not in self._queue:
            self._queue.push_front(w)
        if not self._in_schedule:  # e.g. reset_prefix_cache(reset_running_requests=True): the policy must hear
            self._oob[request.request_id] = (self._step, w)

    def _free_request(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        w = self._views.get(request.request_id)
        if w is not None and w in self._queue:
            self._queue.remove(w)
        self._prefilling.pop(request.request_id, None)
        self._left_running = True
        self._freed.append((self._step, request.request_id))
        return super()._free_request(request, *args, **kwargs)

    def _update_request_with_output(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if request.status is _RUNNING:  # the hot path: every request with output, every step
            return super()._update_request_with_output(request, *args, **kwargs)
        # A preempted request's output still in flight is appended while it waits: its tokens, a key of the sorted
        # copies of the queue (shortest-prompt-first on num_prompt), change. Take it out under its old key and put it
        # back at its place under the new one.
        w = self._views.get(request.request_id)
        if w is None or w not in self._queue:
            return super()._update_request_with_output(request, *args, **kwargs)
        ahead = self._queue.fcfs[: self._queue.fcfs.index(w)]  # preempted requests wait at the front: few
        for r in [*ahead, w]:
            self._queue.remove(r)
        try:
            return super()._update_request_with_output(request, *args, **kwargs)
        finally:
            self._queue.push_front(w)
            for r in reversed(ahead):
                self._queue.push_front(r)

    def _reserve_prefill_lookahead(self, request: Any, num_computed_tokens: int, num_new_tokens: int) -> int:
        # vLLM calls this for every request it is about to give tokens, running or admitted: the one place to
        # hold each to its planned tokens (a prefix cache hit larger than the plan knew leaves budget that the
        # next request would otherwise take).
        n = super()._reserve_prefill_lookahead(request, num_computed_tokens, num_new_tokens)
        if self._caps is not None:
            cap = self._caps.get(request.request_id)
            if cap is not None and n > cap:
                return cap
        return n

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
        # The waiting queue in vLLM's order: arrival (preempted first), or priority under its priority policy.
        waiting = self._queue.by(vllm_priority_order) if self._by_priority else self._queue.fcfs
        if self._engine_view is None:
            self._engine_view = VLLMView(
                clock=clock,
                running=running,
                waiting=waiting,
                free_blocks=free,
                total_blocks=pool.num_gpu_blocks - 1,  # block 0 is vLLM's null block
                block_size=self.block_size,
                watermark=self.watermark,
                token_budget=self.max_num_scheduled_tokens,
                max_num_seqs=self.max_num_running_reqs,
                max_model_len=self.max_model_len,
                by=self._queue.by,
                prefilling=self._prefilling.values(),
                cache=self._lookup,
            )
            return self._engine_view
        return self._engine_view.at(clock, running, waiting, free, self._prefilling.values())

    # --- one step ----------------------------------------------------------------------------------------
    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        self.stats["steps"] += 1
        self._step += 1
        start = time.monotonic()
        if self._lookup is not None:  # the cache has moved since the last step's lookups
            self._lookup.new_step()
        self._in_schedule = True
        try:
            for b in self._inflight:  # scheduled ahead of their output (async): vLLM plans as if they had run
                if not b.reported:
                    self._report(b, start)
            out = self._schedule(start, *args, **kwargs)
        finally:
            self._in_schedule = False
        if self.record_steps:
            self.step_log.append(dict(out.num_scheduled_tokens))
        if self.step_file is not None:
            ran = out.num_scheduled_tokens
            self.step_file.started(start, step_shape(self.requests, ran) if ran else None)
        return out

    def _schedule(self, start: float, *args: Any, **kwargs: Any) -> Any:
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
        self._left_running = False
        if plan is None:
            decoding = {r.request_id for r in self.running if self._wrap(r).is_decoding}
            out = super().schedule(*args, **kwargs)
            self._resync()
            self.stats["fallback_steps"] += 1
            self._inflight.append(_Batch(out, self._step, start, None, False, decoding))
            return out
        self._caps = planned if isinstance(planned, dict) else None
        try:
            out = super().schedule(*args, **kwargs)
        finally:
            self._caps = None
            self._restore(*saved)
        try:
            self._after(out, plan, planned, start)
        except Exception as e:  # vLLM's step is made: never raise into the engine; rebuild our copies instead
            self._log_once("after", "llmsched: bookkeeping after a step failed: %r", e)
            self._resync()
        return out

    def _after(self, out: Any, plan: Plan, planned: dict[str, int] | int, start: float) -> None:
        """Check what vLLM ran against the plan, queue the batch for the policy, move phases along."""
        matched, ran_plan = self._matched(plan, planned, out)
        if not matched:
            self.stats["mismatched_steps"] += 1
            self._log_once(
                "mismatch", "llmsched: vLLM ran %s where the plan said %s", out.num_scheduled_tokens, planned
            )
        self.stats["policy_steps"] += 1
        decoding = {w.req.request_id for w in plan.decodes} if not matched else set()
        self._inflight.append(_Batch(out, self._step, start, ran_plan, matched, decoding))
        for rid in [rid for rid in self._prefilling if rid in out.num_scheduled_tokens]:
            w = self._prefilling[rid]  # its phase moves when its last chunk is scheduled
            w.refresh()
            if w.is_decoding:
                del self._prefilling[rid]

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
        of the n running requests that vLLM can give one). A planned request vLLM cannot run now (gone, or a
        decode whose steps in flight reach max_tokens) or named twice is left out."""
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
        if len(plan.decodes) == len(self.running) and not (plan.prefills or plan.preempt or self._left_running):
            # The steady state: one token for every running request (none left since the last step). vLLM's
            # running list is the plan as it stands; only its waiting queue is hidden.
            self.waiting = create_request_queue(SchedulingPolicy.FCFS)
            self.max_num_scheduled_tokens = len(self.running)
            if self._overlap:
                return saved, sum(map(_runnable, self.running))
            return saved, len(self.running)
        decodes = [r for w in plan.decodes if (r := w.req).status is _RUNNING and _runnable(r)]
        planned = dict.fromkeys([r.request_id for r in decodes], 1)
        full, partial, admit = [], [], saved[3]
        for w, n in plan.prefills:
            r = w.req
            if n <= 0 or r.request_id in planned:
                continue
            if r.status is _RUNNING:
                (full if n >= w.remaining_prefill else partial).append(r)
            elif r.status in _WAITING and not (r.num_stale_output_tokens and not r.drop_stale_output):
                admit.append(r)  # (vLLM holds back a preempted request whose stale output is still in flight)
            else:
                continue
            planned[r.request_id] = n
        queue = create_request_queue(SchedulingPolicy.FCFS)
        for r in admit:
            queue.add_request(r)
        self.running, self.waiting = list(dict.fromkeys(decodes + full + partial)), queue
        self.max_num_scheduled_tokens = sum(planned.values())
        return saved, planned

    def _restore(self, running: list, waiting: Any, budget: int, admit: list) -> None:
        """After vLLM's step on the restricted queues: running in admission order (old, then newly admitted);
        the original waiting queue less the admitted, with what vLLM preempted in this step at the front."""
        self.max_num_scheduled_tokens = budget
        if not admit and not self.waiting:  # none admitted, none preempted: the steady state
            self.running, self.waiting = running, waiting
            return
        left = list(self.waiting)  # planned admissions vLLM did not take, and requests it preempted (front)
        admitted = [r for r in admit if r.status is _RUNNING]
        preempted = len(left) > len(admit) - len(admitted)
        if preempted:
            running = [r for r in running if r.status is _RUNNING]
        self.running = running + admitted if admitted else running
        for r in admitted:
            try:
                waiting.remove_request(r)
            except ValueError:  # not queued there: never let a mirror mistake reach vLLM's queue
                self._log_once("restore", "llmsched: admitted request %s was not in the waiting queue", r.request_id)
            w = self._views.get(r.request_id)
            if w is None:
                continue
            if w in self._queue:
                self._queue.remove(w)
            w.refresh()
            if not w.is_decoding:
                self._prefilling[r.request_id] = w
        if preempted:
            admits = set(map(id, admit))
            waiting.prepend_requests(reversed([r for r in left if id(r) not in admits]))
        self.waiting = waiting

    def _matched(self, plan: Plan, planned: dict[str, int] | int, out: Any) -> tuple[bool, Plan]:
        """Whether vLLM ran the plan, and the plan as it ran. A prefill that got fewer tokens than planned and
        still finished its prompt ran as planned: its prefix cache hit was larger than the plan knew (a request
        admitted earlier in the same step cached the blocks it shares)."""
        ran = out.num_scheduled_tokens
        if isinstance(planned, int):  # vLLM could only schedule running requests: count them
            return len(ran) == out.total_num_scheduled_tokens == planned, plan
        if planned == ran:
            return True, plan
        if planned.keys() != ran.keys():
            return False, plan
        shortened = {}
        for rid, n in planned.items():
            k = ran[rid]
            if k != n:
                r = self.requests.get(rid)
                if k > n or r is None or r.num_computed_tokens < r.num_tokens:
                    return False, plan
                shortened[rid] = k
        self.stats["cache_shortened_prefills"] += len(shortened)
        prefills = [(w, shortened.get(w.req.request_id, n)) for w, n in plan.prefills]
        return True, Plan(prefills, plan.decodes, plan.preempt, plan.reject)

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
        b = self._done(scheduler_output)
        if b is not None and not b.reported:
            self._report(b, end)
        self._drop_freed_views()
        if self.step_file is not None:
            self.step_file.ended(time.monotonic(), bool(self.running or self.waiting))
        return outputs

    def _done(self, out: Any) -> _Batch | None:
        """The in-flight batch of this SchedulerOutput, taken off the queue with any older one (vLLM processes
        outputs in order, so an older one was never going to be)."""
        for i, b in enumerate(self._inflight):
            if b.out is out:
                for _ in range(i + 1):
                    self._inflight.popleft()
                return b
        return None

    def _report(self, b: _Batch, end: float) -> None:
        """The policy's `on_batch_done` for a batch: the plan, or the batch rebuilt from vLLM's output."""
        b.reported = True
        self.step_clock = (b.start, end)
        try:
            plan = b.plan if b.matched and b.plan is not None else self._executed(b.out, b.plan, b.decoding)
            if self._oob:
                plan = self._with_preempted_outside(plan, b.step)
            for w, _ in plan.prefills:
                w.refresh()
                if w.is_decoding or w.finished:
                    self._prefilling.pop(w.req.request_id, None)
            self.llm_policy.on_batch_done(self._view(end), plan, b.start, end)
        except Exception as e:
            self._log_once("on_batch_done", "llmsched: policy on_batch_done failed: %r", e)

    def _with_preempted_outside(self, plan: Plan, step: int) -> Plan:
        """The batch of `step` with the preemptions made outside schedule() reported, and the work of those
        preempted after it was scheduled taken out (recompute discards it)."""
        void = {rid for rid, (k, _) in self._oob.items() if k >= step}
        preempt = list(dict.fromkeys([*plan.preempt, *(w for _, w in self._oob.values())]))
        self._oob = {rid: kw for rid, kw in self._oob.items() if kw[0] > step}
        if not void:
            return Plan(plan.prefills, plan.decodes, preempt, plan.reject)
        return Plan(
            [(w, n) for w, n in plan.prefills if w.req.request_id not in void],
            [w for w in plan.decodes if w.req.request_id not in void],
            preempt,
            plan.reject,
        )

    def _drop_freed_views(self) -> None:
        """Forget the views of finished requests once every batch that may name them has been reported."""
        if not self._freed:
            return
        oldest = next((b.step for b in self._inflight if not b.reported and b.out.num_scheduled_tokens), None)
        keep = []
        for step, rid in self._freed:
            if oldest is not None and step >= oldest:
                keep.append((step, rid))
                continue
            w = self._views.get(rid)
            if w is not None and w.req.is_finished():
                del self._views[rid]
        self._freed = keep

    def _executed(self, out: Any, planned: Plan | None, decoding: set[str]) -> Plan:
        """The batch that ran, as a Plan (when it is not the plan). A planned decode that did not run is kept in
        the plan, so a policy that dequeued it (SLAI) queues it again, or forgets it if it has finished."""
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
            if w.req.request_id not in ran:
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


class AsyncPolicyScheduler(PolicyScheduler, AsyncScheduler):
    """`PolicyScheduler` on vLLM's `AsyncScheduler`: the step after a batch is planned while that batch runs
    (async scheduling, vLLM's default on GPUs). On CPUs vLLM turns async scheduling off; the class then runs one
    step at a time, as `PolicyScheduler`."""


class AsyncSLAIScheduler(AsyncPolicyScheduler):
    policy_name = "slai"


class AsyncSarathiScheduler(AsyncPolicyScheduler):
    policy_name = "sarathi"


class AsyncSPFScheduler(AsyncPolicyScheduler):
    policy_name = "sarathi-spf"
