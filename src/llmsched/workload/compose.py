"""The workload a config names: a trace's requests (an open loop) or chat sessions (a closed loop), with shared
system prompts on top of either."""

from __future__ import annotations

import numpy as np

from llmsched.errors import UserError
from llmsched.workload.build import WorkloadConfig, build_requests
from llmsched.workload.request import Request
from llmsched.workload.sessions import RECORDED, SESSIONS, Sessions, build_sessions
from llmsched.workload.system_prompts import STREAM, SystemPrompts, parse_system_prompts
from llmsched.workload.tiers import SLOTier, parse_tiers
from llmsched.workload.trace import TraceRow

DEFAULT_THINK_S = 10.0  # mean think time between a session's turns (a choice, not a measurement)


def is_sessions(cfg: WorkloadConfig) -> bool:
    return cfg.trace == SESSIONS  # a file so named: ./sessions


def offered_rate(requests: list[Request]) -> float:
    """Arrivals per second over the span of the arrivals (a replayed trace's rate)."""
    times = [r.arrival for r in requests]
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else 0.0


def check_workload(cfg: WorkloadConfig) -> None:
    """The flags that belong to one kind of workload, and the system prompts' spec, checked before any run."""
    parse_system_prompts(cfg.system_prompts)
    if cfg.prefix_block <= 0:
        raise UserError(f"prefix block is {cfg.prefix_block} tokens, expected a positive integer")
    if is_sessions(cfg):
        if cfg.num_requests is not None:
            raise UserError("--num-requests counts a trace's requests; with --trace sessions use --num-sessions")
        if cfg.num_sessions is not None and cfg.num_sessions <= 0:
            raise UserError(f"--num-sessions is {cfg.num_sessions}, expected a positive integer")
        if cfg.think_time is not None and not cfg.think_time >= 0:
            raise UserError(f"--think-time is {cfg.think_time}, expected seconds >= 0")
        if cfg.arrival == "trace":
            raise UserError("--arrival trace: sessions have no timestamps (they start by poisson, gamma...)")
    else:
        for flag, value in (("--num-sessions", cfg.num_sessions), ("--think-time", cfg.think_time)):
            if value is not None:
                raise UserError(f"{flag} applies to --trace sessions, not to {cfg.trace or 'the built-in trace'}")
        if cfg.answers != RECORDED:
            raise UserError(f"--answers applies to --trace sessions, not to {cfg.trace or 'the built-in trace'}")


def build_workload(
    cfg: WorkloadConfig, max_model_len: int | None = None, rows: list[TraceRow] | None = None
) -> tuple[list[Request] | Sessions, list[SLOTier]]:
    """The requests of a trace (an open loop), or the sessions (a `workload.source.Workload`), and the tiers."""
    check_workload(cfg)
    spec = parse_system_prompts(cfg.system_prompts)
    prompts = SystemPrompts(spec, cfg.prefix_block) if spec else None
    if is_sessions(cfg):
        tiers = parse_tiers(cfg.tiers)
        think = DEFAULT_THINK_S if cfg.think_time is None else cfg.think_time
        return build_sessions(cfg, tiers, think, prompts, max_model_len), tiers
    requests, tiers = build_requests(cfg, max_model_len, rows)
    if prompts is not None:
        for r, k in zip(requests, prompts.draw(len(requests), np.random.default_rng((cfg.seed, STREAM))), strict=True):
            if k >= 0:
                prompts.apply(r, int(k))
    return requests, tiers
