"""A streaming HTTP client for llmsched's OpenAI-compatible Ray Serve app that stamps every token as its chunk arrives,
giving the simulator's `Request` records (so `metrics.summarize` applies), the replica each request went to, and each
request's TTFT split from the replica's own stamps. `replay` sends requests at their arrival times (open loop);
`run_sessions` runs multi-turn chat sessions as a closed loop (`workload.sessions.Sessions`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from llmsched.workload.request import FINISHED, REJECTED, UNFINISHED

# Each request's TTFT, split by the replica's `replica_times` (host clock): the path outside the replica (client to
# replica, and back), the replica's part (its arrival to its first token), and within that the hop to the engine
# core, the queueing there, the prefill step(s) and the hop back to the replica.
SPLITS = ("path", "replica", "to_engine", "queue", "prefill", "from_engine")


@dataclass
class Replayed:
    """One replay: the replica rank per request (None: no token came), requests per rank, the last token's
    time, the host-clock time the arrivals count from, and each request's TTFT split (`SPLITS`, seconds)."""

    ranks: list[int | None]
    per_rank: Counter
    end: float
    t0: float
    split: dict[str, list[float]]

    def median_ms(self, part: str) -> float | None:
        values = self.split[part]
        return float(np.median(values)) * 1e3 if values else None

    def medians_ms(self) -> dict[str, float | None]:
        return {part: self.median_ms(part) for part in SPLITS}


def split_ttft(sent: float, received: float, times: dict[str, float]) -> dict[str, float]:
    arrived, first = times["arrived"], times["first_token"]
    parts = {"path": (arrived - sent) + (received - first), "replica": first - arrived}
    if {"queued", "scheduled", "engine_first_token"} <= times.keys():
        parts |= {"to_engine": times["queued"] - arrived, "queue": times["scheduled"] - times["queued"],
                  "prefill": times["engine_first_token"] - times["scheduled"],
                  "from_engine": first - times["engine_first_token"]}  # fmt: skip
    return parts


async def _send(
    client, url: str, r, prompt: list[int], t0: float, split: dict[str, list[float]], ids: list[int] | None = None
) -> int | None:
    """Stream one request; stamp its tokens (seconds after `t0`) as their chunks arrive and set its state; with
    `ids`, ask for the generated token ids (vLLM's `return_token_ids`) and append them there. Returns the rank of the
    replica that served it (None: no token came)."""
    import httpx

    body = {"prompt": prompt, "max_tokens": r.decode_len, "ignore_eos": True, "stream": True, "tier": r.tier}
    if ids is not None:
        body["return_token_ids"] = True
    r.token_times, r.generated, rank = [], 0, None
    sent = time.monotonic()
    try:
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                now = time.monotonic() - t0
                event = json.loads(line[6:])
                if "error" in event:
                    r.state, r.reason = REJECTED, event["error"]["message"]
                    return rank
                n = event.get("num_tokens", 0)
                if n:
                    rank = event.get("replica_rank")
                    if "replica_times" in event:
                        for part, value in split_ttft(sent, now + t0, event["replica_times"]).items():
                            split[part].append(value)
                    r.token_times.extend([now] * n)
                    r.generated += n
                    if ids is not None:
                        ids += event["choices"][0].get("token_ids") or []
        r.state = FINISHED if r.generated >= r.decode_len else REJECTED
        r.reason = "" if r.state == FINISHED else f"stream ended after {r.generated} tokens"
    except httpx.HTTPError as e:
        r.state, r.reason = UNFINISHED, f"client: {type(e).__name__}"
    return rank


def _client():
    import httpx

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    return httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits)


async def replay(url: str, requests, vocab: int, seed: int) -> Replayed:
    """Send each request at its arrival time (streaming); stamp tokens as their chunks arrive. Requests are
    mutated in place (token_times, state)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, vocab, size=r.prompt_len).tolist() for r in requests]
    ranks: list[int | None] = [None] * len(requests)
    split: dict[str, list[float]] = {part: [] for part in SPLITS}
    t0 = time.monotonic() + 0.5

    async def one(k: int, client) -> None:
        r = requests[k]
        if r.state == REJECTED:  # longer than the model's context: refused before it is sent (build_requests)
            return
        await asyncio.sleep(max(0.0, t0 + r.arrival - time.monotonic()))
        ranks[k] = await _send(client, url, r, prompts[k], t0, split)

    async with _client() as client:
        await asyncio.gather(*(one(k, client) for k in range(len(requests))))
    end = max((t for r in requests for t in r.token_times[-1:]), default=0.0)
    return Replayed(ranks, Counter(x for x in ranks if x is not None), end, t0, split)


@dataclass
class SessionsRun:
    """A closed-loop run: every turn sent (in the order sent; `Request` records with their token times and states),
    the rank that served each (None: no token came), and the `Replayed` totals."""

    requests: list
    replayed: Replayed


def session_tokens(work, vocab: int, seed: int) -> list[list[int]]:
    """Each session's conversation as token ids, deterministic per seed: random ids in [3, vocab) as long as its
    last turn's prompt. Turn k's prompt is the first `prompt_len` of them: the conversation only grows, so every
    earlier prompt and answer is a prefix of it. With recorded answers, the answers in later prompts are these ids,
    not what the model generated (as when a chat trace is replayed): a replica's cache can hit prompt blocks only.
    With generated answers (`next_prompt`), only the ids of the new user messages are taken from here."""
    longest = [max(p for p, _ in s.turns) for s in work.sessions]
    return [np.random.default_rng((seed, i)).integers(3, vocab, size=n).tolist() for i, n in enumerate(longest)]


def next_prompt(prompt: list[int], answer: list[int], conversation: list[int], turns, k: int) -> list[int]:
    """Turn k+1's prompt ids with the answer the engine generated for turn k: turn k's prompt, that answer, then the
    rest of the recorded conversation's turn k+1 (the end of turn k's answer template and the new user message:
    `conversation` from turn k's prompt and recorded answer on, to turn k+1's prompt length)."""
    (p, a), (nxt, _) = turns[k], turns[k + 1]
    return [*prompt, *answer, *conversation[p + a : nxt]]


async def run_sessions(
    url: str,
    work,
    vocab: int,
    seed: int,
    max_tokens: int | None = None,
    answers: str = "generated",
    client=None,
) -> SessionsRun:
    """Run `work` (a `workload.sessions.Sessions`) as a closed loop: each session's first turn is sent at its start,
    turn k+1 when turn k's answer is complete plus the session's think time (`Sessions.on_done`). `max_tokens` caps
    each answer. `answers`: what turn k+1's prompt holds: `generated`, the token ids the engine generated for turn k
    (as a chat client sends them back; `next_prompt`), or `recorded`, the session's recorded ids (`session_tokens`).
    A turn that is not completed (refused, or a stream that ended short or failed) is counted as such (its state and
    reason) and ends its session: the session's later turns are not sent. `client`: an httpx.AsyncClient (tests)."""
    if answers not in ("generated", "recorded"):
        raise ValueError(f"answers is {answers!r}, expected generated or recorded")
    tokens = session_tokens(work, vocab, seed)
    split: dict[str, list[float]] = {part: [] for part in SPLITS}
    sent: list = []
    ranks: list[int | None] = []
    t0 = time.monotonic() + 0.5

    async def session(r, client) -> None:
        i, _ = work.turn_of(r.id)
        prompt = tokens[i][: r.prompt_len]
        while r is not None:
            await asyncio.sleep(max(0.0, t0 + r.arrival - time.monotonic()))
            if max_tokens is not None:
                r.decode_len = min(r.decode_len, max_tokens)
            if len(prompt) != r.prompt_len:  # a generated answer shorter than the recorded one (max_tokens)
                r.prompt_len = r.num_prompt = len(prompt)
            sent.append(r)
            ranks.append(None)
            if r.state == REJECTED:  # longer than the model's context (Sessions.max_model_len): ends its session
                return
            k = len(sent) - 1
            answer: list[int] | None = [] if answers == "generated" else None
            ranks[k] = await _send(client, url, r, prompt, t0, split, answer)
            done = r.token_times[-1] if r.token_times else time.monotonic() - t0
            nxt = work.on_done(r, done)
            if nxt:
                _, turn = work.turn_of(r.id)
                s = work.sessions[i]
                prompt = (
                    next_prompt(prompt, answer, tokens[i], s.turns, turn)
                    if answer is not None
                    else tokens[i][: nxt[0].prompt_len]
                )
            r = nxt[0] if nxt else None

    async with client or _client() as c:
        await asyncio.gather(*(session(r, c) for r in work.initial()))
    end = max((t for r in sent for t in r.token_times[-1:]), default=0.0)
    return SessionsRun(sent, Replayed(ranks, Counter(x for x in ranks if x is not None), end, t0, split))


def use_router(url: str, name: str) -> None:
    """Switch the live app's router (POST /llmsched/router)."""
    import httpx

    httpx.post(url + "/llmsched/router", json={"router": name}, timeout=10).raise_for_status()


def replica_reports(url: str) -> list[dict]:
    """Each replica's last report (`LLMReplica.record_routing_stats`), by rank, from GET /llmsched/routing."""
    import httpx

    snap = httpx.get(url + "/llmsched/routing", timeout=10).json()[0]
    return sorted((r["reported"] for r in snap["replicas"].values()), key=lambda s: s.get("rank", 0))


def settled_reports(url: str, served: int | None = None, timeout_s: float = 20.0, period_s: float = 0.6) -> list[dict]:
    """The replicas' reports once none has a request outstanding and they have served `served` requests in all
    (None: once two reports `period_s` apart agree). Replicas report every `stats_period_s` (0.5 s), so counters read
    right after a request may not count it yet."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        reports = replica_reports(url)
        idle = all(r.get("requests", 1) == 0 for r in reports)
        if served is not None:
            done = idle and sum(r.get("served", 0) for r in reports) >= served
        else:
            done = idle and reports == last
        if done or time.monotonic() > deadline:
            return reports
        last = reports
        time.sleep(period_s)
