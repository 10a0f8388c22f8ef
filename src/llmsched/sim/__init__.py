"""The simulated engine (one replica) and a cluster of replicas behind a router."""

from llmsched.records import RunResult
from llmsched.sim.engine import EngineConfig, SimEngine

__all__ = ["EngineConfig", "RunResult", "SimEngine"]
