"""The simulated engine (one replica) and a cluster of replicas behind a router."""

from llmsched.sim.engine import EngineConfig, RunResult, SimEngine

__all__ = ["EngineConfig", "RunResult", "SimEngine"]
