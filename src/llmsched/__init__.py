"""llmsched: scheduling policies, a calibrated simulator and theory for LLM inference.

The Python API (docs/python-api.md) is `llmsched.api`, whose names are importable from here too:
`import llmsched as ls; ls.run(ls.spec("slai", ls.WorkloadConfig(num_requests=200, qps=2)))`. They load on first use, so
that the command line does not pay for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from llmsched.api import (  # noqa: F401
        Capacity,
        ClusterChoice,
        PolicyChoice,
        Run,
        RunSpec,
        Sweep,
        UserError,
        WorkloadConfig,
        capacity,
        cluster,
        gpu_names,
        model_names,
        plot,
        policy,
        policy_names,
        router_names,
        run,
        spec,
        sweep,
    )


def _api() -> Any:
    from importlib import import_module

    return import_module("llmsched.api")


def __getattr__(name: str) -> Any:
    if name.startswith("__") or name == "api":  # dunders and the submodule itself: the import system's to find
        raise AttributeError(f"module 'llmsched' has no attribute {name!r}")
    api = _api()
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'llmsched' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_api().__all__])
