"""Metrics of a run with `vllm bench serve` names (`summary`), its distributions for plots (`distributions`), and
whether its queue stays bounded (`stability`)."""

from llmsched.metrics.distributions import Detail, details_of
from llmsched.metrics.stability import Stability, queue_growth
from llmsched.metrics.summary import leave_one_out, summarize

__all__ = ["Detail", "Stability", "details_of", "leave_one_out", "queue_growth", "summarize"]
