"""Adapters that run llmsched policies inside real serving engines (vLLM) and routers (Ray Serve)."""
