"""A batch-time model off from another by a known error: what a policy that plans with a model sees when the engine's
times differ from it (a uniform error, a shape-dependent one), or a host overhead the model leaves out.

    t = scale x (base(shape) + (decode_scale - 1) x (base(shape) - base(shape without its decodes))) + added_s

`decode_scale` scales the decodes' marginal cost only (their tokens, attention and KV reads): decodes costing more
(or less) than the model predicts while prefill chunks cost what it says.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsched.perf.base import BatchShape, PerfModel


@dataclass(frozen=True)
class Perturbed:
    base: PerfModel
    scale: float = 1.0
    decode_scale: float = 1.0
    added_s: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.base.name} x{self.scale:g} (decodes x{self.decode_scale:g}) +{self.added_s * 1e3:g} ms"

    def batch_time(self, shape: BatchShape) -> float:
        if shape.tokens == 0:
            return 0.0
        t = self.base.batch_time(shape)
        if self.decode_scale != 1.0 and shape.decodes:
            t += (self.decode_scale - 1.0) * (t - self.base.batch_time(shape._replace(decodes=0, decode_context=0)))
        return self.scale * t + self.added_s
