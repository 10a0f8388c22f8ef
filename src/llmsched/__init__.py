"""llmsched: scheduling policies, a calibrated simulator and theory for LLM inference."""

__version__ = "0.1.0"
