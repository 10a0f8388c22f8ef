"""Scheduling policies, one file each. `make_policy(name)` builds one from its registered name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from llmsched.errors import UserError
from llmsched.policies.batch import BatchBuilder
from llmsched.policies.deadline_sized import PRESETS as DEADLINE_SIZED_PRESETS
from llmsched.policies.deadline_sized import DeadlineSized
from llmsched.policies.fastertransformer import FasterTransformer
from llmsched.policies.interface import EngineView, Policy
from llmsched.policies.orca import Orca
from llmsched.policies.plan import Plan
from llmsched.policies.rad import RAD
from llmsched.policies.sarathi import Sarathi
from llmsched.policies.slai import PRESETS as SLAI_PRESETS
from llmsched.policies.slai import SLAI
from llmsched.policies.vllm_v0 import VLLMv0
from llmsched.policies.vllm_v1 import VLLMv1

POLICIES: dict[str, Callable[..., Policy]] = {
    "vllm": VLLMv0,
    "vllm-v1": VLLMv1,
    "orca": Orca,
    "fastertransformer": FasterTransformer,
    "sarathi": Sarathi,
    "sarathi-spf": partial(Sarathi, order="spf"),
    **{name: partial(SLAI, preset=name) for name in SLAI_PRESETS},
    "rad": RAD,
    **{name: partial(DeadlineSized, preset=name) for name in DEADLINE_SIZED_PRESETS},
}


def make_policy(name: str, **options: object) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise UserError(f"unknown policy {name!r}, expected one of {', '.join(POLICIES)}") from None
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise UserError(f"policy {name!r}: {e}") from None


def policy_class(name: str) -> type[Policy]:
    make_policy(name)  # validates the name
    factory = POLICIES[name]
    return factory.func if isinstance(factory, partial) else factory  # type: ignore[return-value]


def policy_defaults(name: str) -> dict[str, int]:
    return dict(getattr(policy_class(name), "defaults", {"token_budget": 512, "max_num_seqs": 128}))


def needs_perf(name: str) -> bool:
    """The policy sizes batches with a batch-time model: engines pass theirs as the `perf` option."""
    return bool(getattr(policy_class(name), "needs_perf", False))


__all__ = [
    "POLICIES",
    "BatchBuilder",
    "EngineView",
    "Plan",
    "Policy",
    "make_policy",
    "needs_perf",
    "policy_class",
    "policy_defaults",
]
