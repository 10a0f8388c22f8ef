"""Forecast a served cluster (vLLM replicas behind a router on Ray Serve) with the simulator.

What serving adds to the engines is fitted on the live app from a probe run (other requests than the ones
forecast): the replicas' step model (`perf.measured.fit_to_steps` on their step logs: a factor on the profile plus a
cost per sequence) and the latency outside the engines (the probe's median path from client to replica and back,
plus its median hop from the engine core back to the replica, from the replicas' own stamps). The hop in is not
added: the engine core takes new requests between steps, so it mostly overlaps the step in progress, which the
simulator models. Without the engine's stamps, the latency is the probe's median TTFT as served less as simulated.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from llmsched.metrics import summarize
from llmsched.perf.base import BatchShape, PerfModel
from llmsched.perf.measured import StepFitted, fit_to_steps
from llmsched.policies import make_policy
from llmsched.records import BatchLog, RunResult
from llmsched.routers import make_router
from llmsched.sim.cluster import Cluster, ClusterResult
from llmsched.sim.engine import EngineConfig, SimEngine
from llmsched.workload.request import Request

# vLLM's CPU backend pages KV in blocks of 128 tokens.
CPU_BLOCK_SIZE = 128


@dataclass(frozen=True)
class ServedCluster:
    """The served app as the simulator stands for it: each replica's settings as the app reports them (`kv_blocks`,
    `token_budget`, `max_num_seqs`), the routers' capacities (tokens/s per replica), the policy in every replica
    (vLLM's own scheduler is simulated by `vllm-v1`), the model's length limit and the routers' seed."""

    replicas: tuple[dict, ...]
    capacities: tuple[float, ...]
    policy: str
    max_model_len: int
    seed: int = 0

    def simulate(
        self, requests: list[Request], router: str, perfs: list[PerfModel], latency: float = 0.0
    ) -> ClusterResult:
        """The cluster with one batch-time model per replica; every token is stamped `latency` seconds later (the
        path outside the engines: HTTP, ingress, routing, streaming back). `requests` are copied, not mutated."""
        policy = "vllm-v1" if self.policy == "vllm-default" else self.policy
        engines = [
            SimEngine(
                EngineConfig(
                    o["kv_blocks"],
                    o["token_budget"],
                    o["max_num_seqs"],
                    CPU_BLOCK_SIZE,
                    max_model_len=self.max_model_len,
                ),
                make_policy(policy),
                perf,
            )
            for o, perf in zip(self.replicas, perfs, strict=True)
        ]
        result = Cluster(engines, make_router(router, self.capacities, self.seed)).run(copy.deepcopy(requests))
        for r in result.requests:
            r.token_times = [t + latency for t in r.token_times]
        return result


def decode_capacity(perf: PerfModel, seqs: int, context: int) -> float:
    """Decode tokens/s of a replica running `seqs` decodes at `context` tokens each: a router's capacity."""
    return seqs / perf.batch_time(BatchShape.of([], [context] * seqs))


@dataclass(frozen=True)
class ProbeFit:
    """What serving adds, fitted on one probe run: the replicas' step model, the latency outside the engines, the
    medians of the probe's TTFT split (`integrations.ray_serve.client.SPLITS`), its median TTFT simulated with the
    model (the engines' part), what the model and latency leave unexplained, the steps fitted and the probe's
    host-clock window."""

    model: StepFitted
    latency: float
    split_ms: dict[str, float | None]
    sim_ttft_ms: float
    unexplained: float
    steps: int
    window: tuple[float, float] = (0.0, 0.0)

    def describe(self) -> str:
        m = self.model
        return f"{m.compute:.2f} x profile + {m.per_seq * 1e3:.2f} ms per sequence"


def fit_probe(
    cluster: ServedCluster,
    perf: PerfModel,
    probe: list[Request],
    served: list[Request],
    served_end: float,
    split_ms: dict[str, float | None],
    steps: list[tuple[float, BatchShape]],
    router: str,
    window: tuple[float, float] = (0.0, 0.0),
) -> ProbeFit:
    """`probe`: the probe's requests as sent; `served`: the same requests as they came back (token times), the last
    token at `served_end`; `split_ms`: the medians of their TTFT split; `steps`: the replicas' steps in the probe's
    window (seconds, shape)."""
    model = fit_to_steps(perf, steps)
    served_s = summarize(RunResult(served, BatchLog(), 0, served_end), [])["median_ttft_ms"] / 1e3
    sim_s = summarize(cluster.simulate(probe, router, [model] * len(cluster.replicas)), [])["median_ttft_ms"] / 1e3
    path, back = split_ms["path"], split_ms["from_engine"]
    latency = (path + back) / 1e3 if path is not None and back is not None else max(0.0, served_s - sim_s)
    return ProbeFit(model, latency, split_ms, sim_s * 1e3, served_s - sim_s - latency, len(steps), window)


@dataclass(frozen=True)
class Forecast:
    """The step model and latency the simulator is given: the medians of one or more probe fits (this machine's
    speed drifts between them). One factor on the profile for every step (the engines and Serve's processes share
    the cores; the profile ran alone) plus a cost per sequence (each running request's token also goes through
    vLLM's output processing and Serve's streaming)."""

    model: StepFitted
    latency: float

    @staticmethod
    def of(fits: list[ProbeFit]) -> Forecast:
        model = StepFitted(
            fits[0].model.inner,
            float(np.median([f.model.compute for f in fits])),
            float(np.median([f.model.per_seq for f in fits])),
        )
        return Forecast(model, float(np.median([f.latency for f in fits])))
