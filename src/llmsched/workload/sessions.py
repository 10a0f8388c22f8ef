"""Multi-turn chat sessions as a closed loop (`--trace sessions`): real ShareGPT V3 conversations
(`data/sharegpt_v3_sessions.csv`). Sessions start as an arrival process at `--qps` sessions per second; turn k's
prompt is the conversation so far (every earlier prompt and answer, then the new user message); turn k+1 arrives
when turn k's answer is complete plus an exponential think time. A turn that is rejected ends its session.

The answer in the next prompt is, by `answers`, the one the engine generated (`generated`: what a chat client sends
back; the turn's prefix ids go on over its answer, so an engine caches the answer's full blocks and the next turn can
hit them, as vLLM's prefix caching does) or the recorded one (`recorded`: a replayed chat trace, whose answers no
engine generated, so only earlier prompts can be hit)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate
from pathlib import Path

import numpy as np

from llmsched.errors import UserError
from llmsched.workload.arrivals import arrival_times
from llmsched.workload.build import WorkloadConfig, reject_over_length
from llmsched.workload.request import FINISHED, REJECTED, Request
from llmsched.workload.system_prompts import SystemPrompts
from llmsched.workload.tiers import SLOTier

SESSIONS = "sessions"  # the name --trace takes
SESSIONS_FILE = "sharegpt_v3_sessions.csv"
# The Mistral v1 instruct template, as data/README.md counts it: <s>[INST] user [/INST] answer</s>[INST] ...
BOS, INST, EOS = 1, 7, 1
# Prefix ids of a session: SPAN ids each, whole blocks first, then one per turn for its partial last block.
SPAN, PARTIAL = 1 << 24, 1 << 23
STREAM = 10  # the sessions' random stream: default_rng((seed, STREAM))
GENERATED, RECORDED = "generated", "recorded"
ANSWERS = (GENERATED, RECORDED)  # what the next turn's prompt holds (module doc)


def sessions_path() -> Path:
    return Path(str(resources.files("llmsched.workload") / "data" / SESSIONS_FILE))


def load_sessions(path: Path | None = None) -> list[list[tuple[int, int]]]:
    """Each session's turns as (user tokens, assistant tokens), in the file's order."""
    path = path or sessions_path()
    sessions: list[list[tuple[int, int]]] = []
    try:
        with open(path, newline="") as f:
            for line, rec in enumerate(csv.DictReader(f), 2):
                try:
                    s, k, user, answer = (int(rec[c]) for c in ("session", "turn", "user_tokens", "assistant_tokens"))
                except (KeyError, TypeError, ValueError):
                    raise UserError(
                        f"{path}: line {line}: expected integers session,turn,user_tokens,assistant_tokens"
                    ) from None
                if s == len(sessions) and k == 0:
                    sessions.append([])
                if s != len(sessions) - 1 or k != len(sessions[-1]) or user < 1 or answer < 1:
                    nxt = f"session {len(sessions) - 1} turn {len(sessions[-1])} or " if sessions else ""
                    raise UserError(
                        f"{path}: line {line}: expected {nxt}session {len(sessions)} turn 0, with positive token counts"
                    )
                sessions[-1].append((user, answer))
    except OSError as e:
        raise UserError(f"{path}: cannot read sessions ({e.strerror or e})") from None
    if not sessions:
        raise UserError(f"{path}: no sessions")
    return sessions


def turn_lengths(turns: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(prompt, output) of each turn: the prompt holds every earlier turn's prompt and answer (with the template)."""
    out, context = [], BOS
    for user, answer in turns:
        out.append((context + user + INST, answer))
        context += user + INST + answer + EOS
    return out


def turn_prefix_ids(slot: int, turn: int, prompt_len: int, block: int) -> tuple[int, ...]:
    """Ids of one turn's prompt: whole block j of a session's conversation is the same id in every turn that holds
    it (the conversation only grows); a partial last block is the turn's own."""
    full, rest = divmod(prompt_len, block)
    if full >= PARTIAL:
        raise UserError(f"a prompt of {prompt_len} tokens has more than {PARTIAL} blocks of {block}")
    base = slot * SPAN
    ids = range(base, base + full)
    return (*ids, base + PARTIAL + turn) if rest else tuple(ids)


@dataclass
class _Session:
    turns: list[tuple[int, int]]  # (prompt, output)
    first_id: int
    start: float
    thinks: np.ndarray  # before each turn (the first unused)
    tier: SLOTier
    system_prompt: int  # -1: none


class Sessions:
    """A closed-loop `workload.source.Workload`. Request ids are fixed by (session, turn), whatever the timing."""

    def __init__(
        self,
        sessions: list[list[tuple[int, int]]],
        starts: np.ndarray,
        thinks: np.ndarray,
        tiers: list[SLOTier],
        prefix_block: int,
        system_prompts: SystemPrompts | None = None,
        prompt_choice: np.ndarray | None = None,
        max_model_len: int | None = None,
        answers: str = RECORDED,
    ) -> None:
        if answers not in ANSWERS:
            raise UserError(f"answers is {answers!r}, expected one of {', '.join(ANSWERS)}")
        firsts = [0, *accumulate(len(t) for t in sessions)]
        self.sessions = [
            _Session(
                turn_lengths(turns),
                firsts[i],
                float(starts[i]),
                thinks[firsts[i] : firsts[i + 1]],
                tiers[i],
                -1 if prompt_choice is None else int(prompt_choice[i]),
            )
            for i, turns in enumerate(sessions)
        ]
        self.prefix_block = prefix_block
        self.system_prompts = system_prompts
        self.max_model_len = max_model_len  # a longer turn is rejected on arrival (and ends its session)
        self.answers = answers
        self._of_id = {s.first_id + k: (i, k) for i, s in enumerate(self.sessions) for k in range(len(s.turns))}

    @property
    def num_turns(self) -> int:
        return len(self._of_id)

    def turn_of(self, request_id: int) -> tuple[int, int]:
        """(session, turn) of a request this workload made."""
        return self._of_id[request_id]

    def initial(self) -> list[Request]:
        return [self._request(i, 0, s.start) for i, s in enumerate(self.sessions)]

    def on_done(self, r: Request, t: float) -> list[Request]:
        i, k = self._of_id[r.id]
        s = self.sessions[i]
        if r.state != FINISHED or k + 1 == len(s.turns):
            return []
        return [self._request(i, k + 1, t + float(s.thinks[k + 1]))]

    def expand(self) -> list[Request]:
        """Every turn as if each answer came the instant its turn arrived (lengths and ids; no engine)."""
        out = []
        for i, s in enumerate(self.sessions):
            t = s.start
            for k in range(len(s.turns)):
                t += float(s.thinks[k]) if k else 0.0
                out.append(self._request(i, k, t))
                if out[-1].state == REJECTED:
                    break
        return out

    def _request(self, i: int, k: int, arrival: float) -> Request:
        s = self.sessions[i]
        prompt, output = s.turns[k]
        generated = self.answers == GENERATED
        ids = turn_prefix_ids(i, k, prompt + output if generated else prompt, self.prefix_block)
        r = Request(
            s.first_id + k, arrival, prompt, output, s.tier.name, s.tier.tbt, s.tier.priority, ids, self.prefix_block,
            generated,
        )  # fmt: skip
        if s.system_prompt >= 0 and self.system_prompts is not None:
            self.system_prompts.apply(r, s.system_prompt)
        if self.max_model_len is not None:
            reject_over_length([r], self.max_model_len)
        return r


def scaled_sessions(
    n: int,
    seed: int,
    scale: float,
    min_turns: int,
    max_len: int,
    path: Path | None = None,
    max_answer: int | None = None,
) -> list[list[tuple[int, int]]]:
    """`n` of the file's sessions with at least `min_turns` turns, in a seeded order, their user and answer tokens
    scaled by `scale` (at least 1 each; answers at most `max_answer`, what a served run generates), each cut before
    the first turn whose prompt and answer exceed `max_len` tokens (a session left with fewer than `min_turns` turns
    is skipped). For serving on small machines."""
    every = load_sessions(path)
    rng = np.random.default_rng((seed, STREAM))
    out: list[list[tuple[int, int]]] = []
    cap = max_answer or (1 << 62)
    for j in rng.permutation(len(every)):
        turns = [(max(1, round(u * scale)), min(cap, max(1, round(a * scale)))) for u, a in every[j]]
        keep = sum(1 for p, a in turn_lengths(turns) if p + a <= max_len)  # prompts only grow
        if keep >= min_turns:
            out.append(turns[:keep])
            if len(out) == n:
                return out
    raise UserError(f"only {len(out)} sessions have {min_turns} turns within {max_len} tokens at scale {scale}")


def build_sessions(
    cfg: WorkloadConfig,
    tiers: list[SLOTier],
    think_time: float,
    system_prompts: SystemPrompts | None = None,
    max_model_len: int | None = None,
) -> Sessions:
    """`cfg.num_sessions` sessions (all the file's by default) in a seeded order, with replacement beyond the file's
    count; starts by `cfg.arrival` (poisson by default) at `cfg.qps` sessions/s; exponential think times of mean
    `think_time` s, tiers and system prompts drawn per session from the seed."""
    every = load_sessions()
    n = len(every) if cfg.num_sessions is None else cfg.num_sessions
    if n <= 0:
        raise UserError(f"--num-sessions is {n}, expected a positive integer")
    kind = cfg.arrival or "poisson"
    rng = np.random.default_rng((cfg.seed, STREAM))
    order = rng.permutation(len(every))
    if n > len(every):
        order = np.concatenate([order, rng.integers(0, len(every), n - len(every))])
    picked = [every[j] for j in order[:n]]
    starts = arrival_times(kind, n, cfg.qps, cfg.seed, cfg.burstiness)
    thinks = rng.exponential(think_time, sum(len(t) for t in picked))
    tier_of = rng.choice(len(tiers), size=n, p=[t.share for t in tiers])
    choice = system_prompts.draw(n, rng) if system_prompts is not None else None
    chosen = [tiers[k] for k in tier_of]
    return Sessions(
        picked, starts, thinks, chosen, cfg.prefix_block, system_prompts, choice, max_model_len, cfg.answers
    )
