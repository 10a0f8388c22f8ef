"""The served app: an OpenAI-style `/v1/completions` ingress in front of N `LLMReplica`s, the ingress's handle
routed by `LlmschedRouter`.

The ingress tokenizes (so the router knows each request's prompt and decode tokens), calls a replica's
`generate` through its handle, and streams the answer. A replica that dies before a request's first token
costs nothing but a retry on another replica; one that dies after it ends the request with a clear error
(HTTP 503, or an `error` event in a stream): nothing waits forever and nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError, RayError
from ray.serve.config import RequestRouterConfig
from ray.serve.exceptions import BackPressureError

from llmsched.integrations.ray_serve.replica import LLMReplica, ReplicaOptions
from llmsched.integrations.ray_serve.router import LlmschedRouter

log = logging.getLogger("llmsched.serve")
APP_NAME = "llmsched"
ATTEMPTS = 2  # a request whose replica died before its first token is tried once more elsewhere


@dataclass(frozen=True)
class ServeConfig:
    model_dir: str
    replicas: tuple[ReplicaOptions, ...]
    router: str = "round-robin"
    policy: str = "slai"
    tiers: str | None = None
    cpus_per_replica: float = 1.0
    enforce_eager: bool = True
    seed: int = 0
    stats_period_s: float = 0.5
    model_name: str = "llmsched"
    steps_dir: str | None = None  # each replica's engine steps as CSV, rank<k>.csv (integrations/vllm/steps.py)
    perf_model: str | None = None  # batch-time model of a policy that sizes batches by time (an absolute path)
    extra: dict[str, Any] = field(default_factory=dict)


class ReplicaLost(Exception):
    """The replica serving the request died (HTTP 503)."""


class RequestFailed(Exception):
    """The replica raised while serving the request (HTTP 500): not retried, it would fail again."""


api = FastAPI()


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


@serve.deployment(max_ongoing_requests=100_000, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    def __init__(self, llm: Any, model_dir: str, model_name: str) -> None:
        from tokenizers import Tokenizer  # not transformers: a quicker start

        self.llm = llm.options(stream=True)
        path = os.path.join(model_dir, "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path) if os.path.isfile(path) else None  # then token ids only
        self.model_name = model_name

    def _parse(self, body: Any) -> dict[str, Any] | str:
        if not isinstance(body, dict):
            return "the body is not a JSON object"
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str) and prompt and self.tokenizer is None:
            return "prompt: this model folder has no tokenizer.json; send the prompt as a list of token ids"
        if isinstance(prompt, str) and prompt:
            ids = self.tokenizer.encode(prompt).ids
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and t >= 0 for t in prompt):
            ids = list(prompt)
        else:
            return "prompt: expected a non-empty string or list of token ids (one prompt per request)"
        max_tokens = body.get("max_tokens", 16)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return f"max_tokens is {max_tokens!r}, expected a positive integer"
        extra = dict(body.get("vllm_xargs") or {})
        for key in ("tier", "tbt", "priority"):
            if key in body:
                extra[key] = body[key]
        return {
            "prompt_token_ids": ids,
            "max_tokens": max_tokens,
            "ignore_eos": bool(body.get("ignore_eos", False)),
            "extra": extra,
        }

    @staticmethod
    def _choice(text: str, reason: str | None, ids: list[int] | None) -> dict[str, Any]:
        """A completion choice; with `return_token_ids` (vLLM's flag), the generated token ids too (a stream's delta
        ones in each chunk), so a chat client can send the answer back as the model generated it."""
        choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        if ids is not None:
            choice["token_ids"] = ids
        return choice

    async def _chunks(self, call: dict[str, Any]):
        """The replica's deltas, retried once elsewhere if the replica dies before the first one."""
        for attempt in range(ATTEMPTS):
            first = True
            try:
                async for chunk in self.llm.generate.remote(**call):
                    first = False
                    yield chunk
                return
            except (RayActorError, BackPressureError) as e:
                if not first or attempt == ATTEMPTS - 1:
                    raise ReplicaLost(f"the replica serving this request failed: {type(e).__name__}") from e
                log.warning("llmsched: replica failed before the first token (%s); retrying", type(e).__name__)
            except RayError as e:
                cause = getattr(e, "cause", None) or e
                why = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
                raise RequestFailed(f"the replica could not serve this request: {why}") from e

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the body is not JSON")
        call = self._parse(body)
        if isinstance(call, str):
            return _error(400, call)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": self.model_name}
        prompt_tokens = len(call["prompt_token_ids"])
        want_ids = bool(body.get("return_token_ids"))
        if body.get("stream"):
            stream = self._stream(call, head, prompt_tokens, want_ids)
            return StreamingResponse(stream, media_type="text/event-stream")
        text, n, reason, rank, ids = [], 0, None, None, []
        try:
            async for c in self._chunks(call):
                text.append(c["text"])
                n += c["tokens"]
                ids += c.get("token_ids", [])
                reason, rank = c["finish_reason"] or reason, c["rank"]
        except ReplicaLost as e:
            return _error(503, str(e), "replica_failed")
        except RequestFailed as e:
            return _error(500, str(e), "request_failed")
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
        choice = self._choice("".join(text), reason, ids if want_ids else None)
        return {**head, "choices": [choice], "usage": usage, "replica_rank": rank}

    async def _stream(self, call: dict[str, Any], head: dict[str, Any], prompt_tokens: int, want_ids: bool = False):
        n = 0
        try:
            async for c in self._chunks(call):
                n += c["tokens"]
                choice = self._choice(c["text"], c["finish_reason"], c.get("token_ids", []) if want_ids else None)
                event = {**head, "choices": [choice], "replica_rank": c["rank"], "num_tokens": c["tokens"]}
                if "times" in c:
                    event["replica_times"] = c["times"]
                yield f"data: {json.dumps(event)}\n\n"
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
        except (ReplicaLost, RequestFailed) as e:
            kind, code = ("replica_failed", 503) if isinstance(e, ReplicaLost) else ("request_failed", 500)
            yield f"data: {json.dumps({'error': {'message': str(e), 'type': kind, 'code': code}})}\n\n"
        yield "data: [DONE]\n\n"

    @api.get("/llmsched/routing")
    def routing(self) -> list[dict[str, Any]]:
        """Each router in this process (one per handle): decisions, bookings and the replicas' reports."""
        from llmsched.integrations.ray_serve import router  # the module itself, whatever was pickled

        return [r.snapshot() for r in list(router.LIVE_ROUTERS)]

    @api.post("/llmsched/router")
    async def set_router(self, request: Request) -> Any:
        """{"router": NAME}: every router in this process switches to NAME (counts restart from zero)."""
        from llmsched.errors import UserError
        from llmsched.integrations.ray_serve import router

        body = await request.json()
        try:
            for r in list(router.LIVE_ROUTERS):
                r.set_router(str(body.get("router")))
        except UserError as e:
            return _error(400, str(e))
        return [r.snapshot() for r in list(router.LIVE_ROUTERS)]

    @api.get("/health")
    def health(self) -> dict[str, str]:
        return {"status": "ok"}


def build_app(cfg: ServeConfig) -> Any:
    replicas = serve.deployment(LLMReplica).options(
        name="llm",
        num_replicas=len(cfg.replicas),
        max_ongoing_requests=100_000,  # queueing is the replica's scheduler's job: never refuse the router
        ray_actor_options={"num_cpus": cfg.cpus_per_replica},
        health_check_period_s=2.0,
        graceful_shutdown_timeout_s=5.0,
        request_router_config=RequestRouterConfig(
            request_router_class=LlmschedRouter,
            request_router_kwargs={"router": cfg.router, "seed": cfg.seed},
            request_routing_stats_period_s=cfg.stats_period_s,
            request_routing_stats_timeout_s=5.0,
        ),
    )
    llm = replicas.bind(
        cfg.model_dir,
        cfg.policy,
        [asdict(o) for o in cfg.replicas],
        cfg.tiers,
        max(1, int(cfg.cpus_per_replica)),
        cfg.enforce_eager,
        cfg.steps_dir,
        cfg.perf_model,
    )
    return Ingress.bind(llm, cfg.model_dir, cfg.model_name)
