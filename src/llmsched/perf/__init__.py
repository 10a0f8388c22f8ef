"""Batch-time models: an analytic roofline from GPU and model specs, and models fitted to measured rows."""

from llmsched.perf.base import BatchShape, PerfModel
from llmsched.perf.catalog import GPUS, MODELS, get_gpu, get_model, kv_blocks
from llmsched.perf.roofline import Roofline, analytic_model
from llmsched.perf.specs import GPUSpec, ModelSpec

__all__ = [
    "BatchShape",
    "PerfModel",
    "GPUS",
    "MODELS",
    "GPUSpec",
    "ModelSpec",
    "get_gpu",
    "get_model",
    "kv_blocks",
    "Roofline",
    "analytic_model",
]
