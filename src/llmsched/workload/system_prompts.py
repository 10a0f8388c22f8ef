"""Shared system prompts (synthetic), on top of any workload: `--system-prompts K:L:FRACTION` makes K system prompts
of L tokens; each request (each session, for chat sessions) takes one of them, uniformly, with probability FRACTION.
Its first L tokens (its whole prompt, if shorter) are then that system prompt, and their whole blocks share prefix
ids with every other request that took it; the rest of the prompt keeps its own content. Lengths do not change."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmsched.errors import UserError
from llmsched.workload.request import Request

BASE = 1 << 62  # above every id a trace or the sessions give
STREAM = 11  # the system prompts' random stream for a trace: default_rng((seed, STREAM))


@dataclass(frozen=True)
class SystemPromptSpec:
    count: int
    length: int  # tokens
    share: float  # of requests (of sessions)


def system_prompts_problem(text: str) -> str | None:
    """What is wrong with a K:L:FRACTION value ("expected ..."), None if nothing."""
    fields = text.split(":")
    try:
        count, length, share = int(fields[0]), int(fields[1]), float(fields[2])
        if len(fields) != 3:
            raise ValueError
    except (ValueError, IndexError):
        return "expected K:L:FRACTION (e.g. 4:1000:0.5)"
    if count < 1 or length < 1 or not 0 < share <= 1:
        return "expected K >= 1 prompts of L >= 1 tokens for a FRACTION in (0, 1]"
    return None


def parse_system_prompts(text: str | None) -> SystemPromptSpec | None:
    if not text:
        return None
    problem = system_prompts_problem(text)
    if problem is not None:
        raise UserError(f"--system-prompts is {text!r}, {problem}")
    count, length, share = text.split(":")
    return SystemPromptSpec(int(count), int(length), float(share))


class SystemPrompts:
    def __init__(self, spec: SystemPromptSpec, block: int) -> None:
        self.spec, self.block = spec, block  # block: tokens per id for prompts without ids of their own
        self._ids: dict[tuple, int] = {}
        self._next = BASE

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """For n requests (or sessions): the system prompt each takes, -1 for none."""
        taken = rng.random(n) < self.spec.share
        return np.where(taken, rng.integers(0, self.spec.count, n), -1)

    def apply(self, r: Request, k: int) -> None:
        """Make the first L tokens of `r`'s prompt system prompt k: new prefix ids for the whole prompt (the prefix
        of every block changed), in `r`'s block size, else the generator's."""
        block = r.prefix_block or self.block
        old, size = r.prefix_ids, r.id_tokens
        n = -(-size // block)
        if old and len(old) != n:
            raise ValueError(f"request {r.id}: {len(old)} prefix ids for {size} tokens in blocks of {block}")
        shared = min(self.spec.length, size)
        ids = []
        for j in range(n):
            end = min((j + 1) * block, size)
            if end <= shared:  # all system prompt: the same content for every request that took k
                ids.append(self._intern((k, j, end - j * block)))
            elif old:  # system prompt k, then this prompt's own content up to the block's end
                ids.append(self._intern((k, old[j])))
            else:
                ids.append(self._fresh())
        r.prefix_ids, r.prefix_block = tuple(ids), block

    def _intern(self, key: tuple) -> int:
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = self._fresh()
        return found

    def _fresh(self) -> int:
        self._next += 1
        return self._next - 1
