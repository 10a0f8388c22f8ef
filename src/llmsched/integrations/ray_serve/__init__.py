"""Ray Serve integration: llmsched's routers (`llmsched.routers`, the simulator's) route real traffic to vLLM
replicas that schedule with llmsched policies. Needs `pip install 'llmsched[serve]'`.

- `router.LlmschedRouter`: a Serve `RequestRouter` that asks `llmsched.routers` which replica to use.
- `replica.LLMReplica`: a Serve deployment holding a vLLM `AsyncLLM` with the llmsched scheduler plugin.
- `app.build_app` / `server.start`: the OpenAI-style `/v1/completions` app; `llmsched serve` runs it.
"""
