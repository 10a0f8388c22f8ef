"""What a policy returns: the batch to run next, and the requests to preempt or reject first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Req = Any  # a request as `interface` describes it


@dataclass
class Plan:
    prefills: list[tuple[Req, int]] = field(default_factory=list)  # (request, chunk tokens); may admit
    decodes: list[Req] = field(default_factory=list)  # one token each
    preempt: list[Req] = field(default_factory=list)  # by recompute, in this order, before the batch
    reject: list[tuple[Req, str]] = field(default_factory=list)  # can never be served, with the reason

    @property
    def tokens(self) -> int:
        return sum(n for _, n in self.prefills) + len(self.decodes)

    def __bool__(self) -> bool:
        return bool(self.prefills or self.decodes or self.preempt or self.reject)
