"""A streaming HTTP client that replays requests into llmsched's OpenAI-compatible Ray Serve app at their arrival
times and stamps every token as its chunk arrives, giving the simulator's `Request` records (so `metrics.summarize`
applies), the replica each request went to, and each request's TTFT split from the replica's own stamps."""

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


async def replay(url: str, requests, vocab: int, seed: int) -> Replayed:
    """Send each request at its arrival time (streaming); stamp tokens as their chunks arrive. Requests are
    mutated in place (token_times, state)."""
    import httpx

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
        body = {"prompt": prompts[k], "max_tokens": r.decode_len, "ignore_eos": True, "stream": True, "tier": r.tier}
        r.token_times, r.generated = [], 0
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
                        return
                    n = event.get("num_tokens", 0)
                    if n:
                        ranks[k] = event.get("replica_rank")
                        if "replica_times" in event:
                            for part, value in split_ttft(sent, now + t0, event["replica_times"]).items():
                                split[part].append(value)
                        r.token_times.extend([now] * n)
                        r.generated += n
            r.state = FINISHED if r.generated >= r.decode_len else REJECTED
            r.reason = "" if r.state == FINISHED else f"stream ended after {r.generated} tokens"
        except httpx.HTTPError as e:
            r.state, r.reason = UNFINISHED, f"client: {type(e).__name__}"

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:
        await asyncio.gather(*(one(k, client) for k in range(len(requests))))
    end = max((t for r in requests for t in r.token_times[-1:]), default=0.0)
    return Replayed(ranks, Counter(x for x in ranks if x is not None), end, t0, split)
