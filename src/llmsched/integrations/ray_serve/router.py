"""A Ray Serve request router that asks `llmsched.routers` (the simulator's routers) which replica to use.

    RequestRouterConfig(request_router_class=LlmschedRouter, request_router_kwargs={"router": "resource-aware"})

Serve calls `choose_replicas` for each pending request; we map the live replicas onto a `routing.Router`
(one slot per replica, in the order replicas first appeared), let it choose and book the request there at
once, and return that one replica as the only rank. Serve thus sends the request where the router chose or,
if that replica refuses it (full) or died, asks again, and the booking moves with it. Bookings are settled
in `on_request_completed`, which Serve calls once for every dispatched request whatever its outcome.

Loads are this router's own bookings, exactly as the simulator's cluster keeps them: the replicas' reported
loads (`record_routing_stats`) arrive every `request_routing_stats_period_s` and late, so a burst routed on
them would all go to one replica. From the reports we take each replica's capacity (`tokens_per_s`, measured
by the replica) and its rank; the reported loads are kept in the snapshot for comparison. With several
ingress replicas, each has its own router and books only what it routed (the loads it sees are its share).

The token counts of a request come from the call's keyword arguments `prompt_token_ids` and `max_tokens`
(the replica's `generate`); any other call is routed as a request of no tokens. The prefix routers (`prefix-affinity`,
`cache-aware`, `prefix-score`) also get the prompt's per-block content ids (`workload.prefix.token_block_ids`, blocks
of `ROUTER_BLOCK` tokens), as llm-d's approximate prefix scorer hashes the prompt.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from llmsched.routers import PrefixRouter, Router, check_router, make_router
from llmsched.workload.prefix import token_block_ids

log = logging.getLogger("llmsched.serve")
ROUTER_BLOCK = 16  # tokens per prefix id the routers see (llm-d's prefix plugin's block size)

# Every router in this process, for the ingress's /llmsched/routing endpoint.
LIVE_ROUTERS: weakref.WeakSet[LlmschedRouter] = weakref.WeakSet()


def request_tokens(pending: PendingRequest | None) -> tuple[int, int]:
    """(prompt tokens, decode tokens) of a pending `generate` call; (0, 0) for any other call."""
    if pending is None:
        return 0, 0
    kw = pending.kwargs or {}
    ids, max_tokens = kw.get("prompt_token_ids"), kw.get("max_tokens")
    prompt = len(ids) if isinstance(ids, list | tuple) else 0
    decode = int(max_tokens) if isinstance(max_tokens, int) and max_tokens > 0 else 0
    return prompt, decode


def request_prefix_ids(pending: PendingRequest | None, block: int = ROUTER_BLOCK) -> tuple[int, ...]:
    """The prompt's per-block content ids of a pending `generate` call; () for any other call."""
    ids = (pending.kwargs or {}).get("prompt_token_ids") if pending is not None else None
    return token_block_ids(ids, block) if isinstance(ids, list | tuple) else ()


class LlmschedRouter(RequestRouter):
    """Serve's side of `llmsched.routers.Router`: replica bookkeeping in, one replica per request out."""

    def initialize_state(self, router: str = "round-robin", seed: int = 0, default_capacity: float = 1.0) -> None:
        check_router(router)
        self.router_name, self.seed, self.default_capacity = router, seed, float(default_capacity)
        self._lock = threading.Lock()  # snapshots are read from the ingress's own thread
        self._order: list[ReplicaID] = []  # slot i of the llmsched router is replica _order[i]
        self._router: Router | None = None
        self._booked: dict[str, tuple[ReplicaID, int, int]] = {}
        self.chosen: Counter[str] = Counter()
        self.routed: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.moved = 0  # requests that went elsewhere than chosen (the chosen replica refused or died)
        # Serve may ship this class by value (cloudpickle), its globals then a copy: register in the module.
        from llmsched.integrations.ray_serve import router as module

        module.LIVE_ROUTERS.add(self)

    def set_router(self, router: str) -> None:
        """Switch to another llmsched router; bookings are kept (an operator's, or a benchmark's, switch)."""
        check_router(router)
        with self._lock:
            self.router_name, self._router, self.moved = router, None, 0
            for counts in (self.chosen, self.routed, self.completed):
                counts.clear()
            if self._order and all(rid in self._replicas for rid in self._order):
                self._sync(list(self._replicas.values()))  # at once: the snapshot lists every replica

    # --- replica set -------------------------------------------------------------------------------------
    def _capacities(self, by_id: dict[ReplicaID, RunningReplica]) -> list[float]:
        """Reported tokens/s per slot; a replica that has not reported yet gets the others' mean."""
        reported = [(by_id[rid].routing_stats or {}).get("tokens_per_s") for rid in self._order]
        known = [float(v) for v in reported if isinstance(v, int | float) and v > 0]
        fill = sum(known) / len(known) if known else self.default_capacity
        return [float(v) if isinstance(v, int | float) and v > 0 else fill for v in reported]

    def _kv_tokens(self, by_id: dict[ReplicaID, RunningReplica]) -> list[int] | None:
        """Each replica's KV pool in tokens (reported `kv_blocks` x `block_size`), which bounds a prefix router's
        picture of its cache; None until every replica has reported it (the routers' default then)."""
        sizes = []
        for rid in self._order:
            stats = by_id[rid].routing_stats or {}
            blocks, block = stats.get("kv_blocks"), stats.get("block_size")
            if not (isinstance(blocks, int) and isinstance(block, int) and blocks > 0 and block > 0):
                return None
            sizes.append(blocks * block)
        return sizes

    def _sync(self, replicas: list[RunningReplica]) -> Router:
        """The llmsched router over exactly these replicas: rebuilt when the set changes (bookings on the
        surviving replicas carried over, those on gone ones dropped), capacities refreshed from the reports."""
        ids = {r.replica_id for r in replicas}
        by_id = {r.replica_id: r for r in replicas}
        if self._router is None or set(self._order) != ids:
            kept = [rid for rid in self._order if rid in ids]
            new = sorted(ids - set(kept), key=lambda rid: rid.unique_id)
            self._order = kept + new
            self._router = make_router(self.router_name, self._capacities(by_id), self.seed, self._kv_tokens(by_id))
            slot = {rid: i for i, rid in enumerate(self._order)}
            for key, (rid, p, d) in list(self._booked.items()):
                if rid in slot:
                    self._router.book(key, slot[rid], p, d)
                else:
                    del self._booked[key]
        else:
            for load, capacity in zip(self._router.loads, self._capacities(by_id), strict=True):
                load.capacity = capacity
        return self._router

    def _unbook(self, key: str) -> None:
        if self._booked.pop(key, None) is not None and self._router is not None:
            self._router.settle(key)

    # --- Serve's hooks -----------------------------------------------------------------------------------
    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        with self._lock:
            router = self._sync(candidate_replicas)
            if pending_request is None:  # Serve asks without a request only to warm up: any replica
                return [list(candidate_replicas)]
            # Asked again for the same request: its replica refused it or died. Back off between tries, as
            # Serve's own routers do, rather than spin.
            pending_request.routing_context.should_backoff = True
            key = pending_request.metadata.internal_request_id
            self._unbook(key)
            p, d = request_tokens(pending_request)
            ids = request_prefix_ids(pending_request) if isinstance(router, PrefixRouter) else ()
            rid = self._order[router.route(key, p, d, ids, ROUTER_BLOCK if ids else 0)]
            self._booked[key] = (rid, p, d)
            self.chosen[rid.unique_id] += 1
        replica = next(r for r in candidate_replicas if r.replica_id == rid)
        return [[replica]]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        with self._lock:
            self.routed[replica_id.unique_id] += 1
            key = pending_request.metadata.internal_request_id
            booked = self._booked.get(key)
            if booked is not None and booked[0] != replica_id and replica_id in self._order:
                self.moved += 1
                _, p, d = booked
                self._unbook(key)
                assert self._router is not None
                self._router.book(key, self._order.index(replica_id), p, d)
                self._booked[key] = (replica_id, p, d)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        with self._lock:
            self.completed[replica_id.unique_id] += 1
            self._unbook(internal_request_id)

    # --- for the ingress and the tests -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Decisions and loads per replica, keyed by replica id (rank and reported stats included)."""
        with self._lock:
            out: dict[str, Any] = {"router": self.router_name, "moved": self.moved, "replicas": {}}
            loads = self._router.loads if self._router is not None else []
            for rid, load in zip(self._order, loads, strict=False):
                replica = self._replicas.get(rid)
                stats = dict(replica.routing_stats or {}) if replica is not None else {}
                out["replicas"][rid.unique_id] = {
                    "rank": stats.get("rank"),
                    "capacity_tokens_per_s": load.capacity,
                    "booked_requests": load.requests,
                    "booked_prompt_tokens": load.prompt_tokens,
                    "booked_decode_tokens": load.decode_tokens,
                    "reported": stats,
                }
            for name in ("chosen", "routed", "completed"):
                out[name] = dict(getattr(self, name))
            return out
