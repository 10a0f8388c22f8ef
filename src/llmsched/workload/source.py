"""Arrivals that depend on completions (a closed loop: a user reads the answer, thinks, then sends the next turn).

An engine runs a plain list of requests as an open loop; given a `Workload` it asks for the first arrivals, and at
each request's end (finished or rejected) for the arrivals that end causes."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from llmsched.workload.request import Request


@runtime_checkable
class Workload(Protocol):
    def initial(self) -> list[Request]:
        """The arrivals known before the run starts."""
        ...

    def on_done(self, r: Request, t: float) -> list[Request]:
        """The arrivals `r` leaving at time `t` causes, none before `t` (deterministic for a seed: a request's
        arrival may depend on when its predecessor ended, never on the order the engine reports ends)."""
        ...
