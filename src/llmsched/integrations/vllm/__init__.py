"""vLLM integration: scheduler plugins that run llmsched policies inside vLLM v1 (pinned to 0.32.x).

    LLM(model, scheduler_cls="llmsched.integrations.vllm.SLAIScheduler")   # AsyncSLAIScheduler on GPUs

Scheduler classes are imported lazily so that the model helpers work without importing vLLM.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_SCHEDULERS = (
    "PolicyScheduler",
    "SLAIScheduler",
    "SarathiScheduler",
    "SPFScheduler",
    "AsyncPolicyScheduler",
    "AsyncSLAIScheduler",
    "AsyncSarathiScheduler",
    "AsyncSPFScheduler",
)


def __getattr__(name: str) -> Any:
    if name in _SCHEDULERS:
        return getattr(import_module("llmsched.integrations.vllm.scheduler"), name)
    raise AttributeError(name)


__all__ = list(_SCHEDULERS)
