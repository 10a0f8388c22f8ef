"""Batch times of a real vLLM engine over a grid of batch shapes, written as a profile CSV (the format of
`llmsched.perf.fitted`) plus its fitted model (JSON).

The shapes are forced through the scheduler plugin: a scripted policy plans exactly the batch to time
(D decodes at context c_d plus one prefill chunk of p tokens at context c_p). For each (D, c_d), D requests
are prefilled to c_d and kept decoding; for each (p, c_p) a fresh request is admitted, its first c_p tokens
prefilled in an untimed step, and the timed step runs its next p tokens with the D decodes. The time of a
step is the wall time of `LLMEngine.step()`: scheduling, forward pass, sampling and output processing, which
is what one batch costs the real engine (the simulator's batch time includes the per-batch overhead).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from llmsched.errors import UserError
from llmsched.integrations.vllm.steps import write_step_times
from llmsched.policies import Plan, Policy, make_policy

DECODES = (0, 8, 32, 64)
DECODE_CONTEXTS = (256, 1024)
PREFILLS = (0, 64, 256, 512)
PREFILL_CONTEXTS = (0, 512)
REPS = 5


class ScriptedPolicy(Policy):
    """Plans what the profiler asks for: the given decodes, and one chunk for one request."""

    name = "scripted"

    def __init__(self) -> None:
        self.decode_ids: set[str] = set()
        self.chunk: tuple[str, int] | None = None

    def schedule(self, view: Any) -> Plan:
        plan = Plan()
        plan.decodes = [r for r in view.running if r.req.request_id in self.decode_ids and r.is_decoding]
        if self.chunk is not None:
            rid, n = self.chunk
            # LLMEngine suffixes the ids it is given ("pre7" -> "pre7-1a2b3c4d")
            mine = (r for r in [*view.running, *view.waiting] if r.req.request_id.startswith(rid + "-"))
            r = next(mine, None)
            if r is not None:
                plan.prefills.append((r, min(n, r.remaining_prefill)))
        return plan


@dataclass
class Row:
    prefill_tokens: int
    prefill_context: int
    decodes: int
    decode_context: int
    times_ms: list[float]


def _grid() -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(decodes, decode context, [(prefill tokens, prefill context)]) groups, cheapest first."""
    groups = []
    for d in DECODES:
        for cd in DECODE_CONTEXTS if d else (0,):
            chunks = [(p, cp) for p in PREFILLS for cp in (PREFILL_CONTEXTS if p else (0,)) if p or d]
            groups.append((d, cd, chunks))
    return groups


def run_profile(model_dir: str, out: str, budget_s: float | None, steps_out: str | None = None) -> None:
    """Measure the grid on the vLLM engine for `model_dir`; write the profile CSV to `out` and its fit to
    `out` with suffix `.fit.json`. With `budget_s`, stop measuring after that many seconds (what was
    measured is kept; at least one decode row is needed for a fit). With `steps_out`, also write every timed
    step, in measured order, as `bench-engine --steps-out` does (BatchShape fields, step_ms): the machine's
    step-to-step spread, which the medians of the profile leave out."""
    from llmsched.integrations.vllm.engine import EngineSetup, make_engine, scheduler_of
    from llmsched.perf.catalog import register
    from llmsched.perf.fitted import fit, load_profile, save_fit, write_profile
    from llmsched.perf.hf_config import model_name, spec_from_hf

    spec = register(spec_from_hf(model_dir))
    need = max(DECODE_CONTEXTS) + max(PREFILL_CONTEXTS) + max(PREFILLS) + 8
    if spec.max_len < need:
        raise UserError(f"{model_dir}: max_position_embeddings {spec.max_len} is under the grid's {need} tokens")
    setup = EngineSetup(model_dir, token_budget=max(PREFILLS) + max(DECODES), max_num_seqs=max(DECODES) + 2,
                        max_model_len=need + 512, kv_cache_gib=4.0, enforce_eager=True)  # fmt: skip
    engine = make_engine(setup, "sarathi")
    rows: list[Row] = []
    t_start = time.monotonic()
    try:
        rows = _measure(engine, scheduler_of(engine), t_start, budget_s)
    finally:
        engine.engine_core.shutdown()
    if not any(r.decodes for r in rows):
        raise UserError(f"--budget-s {budget_s}: too short to measure any decode row")
    path = Path(out)
    write_profile(path, model_name(model_dir), ((r.prefill_tokens, r.prefill_context, r.decodes, r.decode_context,
                                                 r.times_ms) for r in rows))  # fmt: skip
    profile = load_profile(path, spec.name)  # its rows are `rows`, in order
    save_fit(fit(profile, spec, source=path.name), path.with_suffix(".fit.json"))
    if steps_out is not None:
        write_step_times(steps_out, ((p.shape, t) for p, r in zip(profile, rows, strict=True) for t in r.times_ms))


def _measure(engine: Any, sched: Any, t_start: float, budget_s: float | None) -> list[Row]:
    from vllm import SamplingParams

    warm = make_policy("sarathi")
    script = ScriptedPolicy()
    rng = np.random.default_rng(0)
    vocab = engine.model_config.get_vocab_size()
    rows: list[Row] = []
    seq = 0

    def prompt(n: int) -> dict:
        return {"prompt_token_ids": rng.integers(3, vocab, size=n).tolist()}

    def step() -> float:
        t0 = time.perf_counter()
        engine.step()
        return (time.perf_counter() - t0) * 1e3

    groups = _grid()
    bar = tqdm(total=sum(len(c) for *_, c in groups), desc="profile", unit="shape")
    for d, cd, chunks in groups:
        if budget_s is not None and time.monotonic() - t_start > budget_s:
            break
        sched.llm_policy = warm
        decoders = []
        for _ in range(d):
            rid = f"dec{seq}"
            seq += 1
            engine.add_request(rid, prompt(cd), SamplingParams(max_tokens=4 * REPS * len(chunks) + 16, ignore_eos=True))
            decoders.append(rid)
        while any(r.num_output_tokens == 0 for r in sched.running) or sched.waiting:
            engine.step()
        script.decode_ids = {r.request_id for r in sched.running}
        sched.llm_policy = script
        for p, cp in chunks:
            if budget_s is not None and time.monotonic() - t_start > budget_s:
                break
            times, contexts = [], []
            for _ in range(REPS + 1):  # the first repetition warms up and is dropped
                script.chunk = None
                if p:
                    rid = f"pre{seq}"
                    seq += 1
                    engine.add_request(rid, prompt(cp + p), SamplingParams(max_tokens=1, ignore_eos=True))
                    if cp:
                        script.chunk, saved = (rid, cp), script.decode_ids
                        script.decode_ids = set()
                        engine.step()
                        script.decode_ids = saved
                    script.chunk = (rid, p)
                ctx = [r.num_computed_tokens for r in sched.running if r.request_id in script.decode_ids]
                contexts.append(float(np.mean(ctx)) if ctx else 0.0)
                times.append(step())
            rows.append(Row(p, cp, d, round(float(np.mean(contexts[1:]))), times[1:]))
            bar.update()
        script.chunk = None
        engine.abort_request([r.request_id for r in list(sched.running) + list(sched.waiting)], internal=True)
        while engine.has_unfinished_requests():
            engine.step()
    bar.close()
    return rows
