"""Workloads: request lengths (traces), arrival processes and SLO tiers."""

from llmsched.workload.build import WorkloadConfig, build_requests
from llmsched.workload.request import Request
from llmsched.workload.tiers import SLOTier, parse_tiers
from llmsched.workload.trace import TraceRow, builtin_trace_path, load_trace

__all__ = [
    "Request",
    "SLOTier",
    "parse_tiers",
    "TraceRow",
    "load_trace",
    "builtin_trace_path",
    "WorkloadConfig",
    "build_requests",
]
