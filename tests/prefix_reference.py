"""The prefix cache's books kept block by block: one key, one reference count and one free-queue entry per block, the
plain reading of vLLM v1's KV cache manager (module doc of `llmsched.sim.kv_cache`). The package keeps the same books
run-length encoded; `test_prefix_cache.py` checks that the two agree on random workloads."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

from llmsched.policies.interface import NO_HIT, PrefixHit
from llmsched.workload.prefix import chain_ids
from llmsched.workload.request import Request

_SHIFT = 20  # key = chained id << _SHIFT | end offset in the trace block

_Chain = tuple[list[int], int, int]  # (chained ids, tokens per id, cacheable blocks)
_NONE: _Chain = ([], 0, 0)


class PrefixCache:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.total = num_blocks
        self.block_size = block_size
        self.free = num_blocks  # blocks no request holds: uncached, or cached and evictable
        self.refs: dict[int, int] = {}  # cached block key -> requests holding it (0: evictable, in the free queue)
        # Free blocks, least recently freed first: a cached block under its key (value 1), a run of uncached blocks
        # under a fresh object (value: how many).
        self._queue: OrderedDict[object, int] = OrderedDict()
        if num_blocks:
            self._queue[object()] = num_blocks
        self._held: dict[int, list[int]] = {}  # request id -> keys of the cached blocks it holds, in prompt order
        self._chains: dict[int, _Chain] = {}
        self._memo: dict[int, tuple[int, int | None, int | None]] = {}  # waiting request id -> (hit, next, last key)
        self.evicted = 0

    # --- keys ----------------------------------------------------------------------------------------------------
    def _chain(self, r: Request) -> _Chain:
        c = self._chains.get(r.id)
        if c is None:
            pb = r.prefix_block
            if r.prefix_ids and pb > 0:
                c = (chain_ids(r.prefix_ids), pb, min(len(r.prefix_ids) * pb, r.id_tokens) // self.block_size)
            else:
                c = _NONE
            self._chains[r.id] = c
        return c

    def _key(self, chain: list[int], pb: int, j: int) -> int:
        end = (j + 1) * self.block_size
        t = (end - 1) // pb
        return chain[t] << _SHIFT | (end - t * pb)

    def _keys(self, chain: list[int], pb: int, a: int, b: int) -> list[int]:
        """Keys of blocks a..b-1."""
        bs = self.block_size
        return [chain[(e - 1) // pb] << _SHIFT | (e - (e - 1) // pb * pb) for e in range((a + 1) * bs, b * bs + 1, bs)]

    def _leading(self, chain: list[int], pb: int, n: int, present: Callable[[int], bool]) -> int:
        """How many of the first n blocks satisfy `present`, which holds on a prefix of them (module doc)."""
        if n == 0 or not present(self._key(chain, pb, 0)):
            return 0
        lo, hi = 1, n
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if present(self._key(chain, pb, mid - 1)):
                lo = mid
            else:
                hi = mid - 1
        return lo

    # --- lookups (the policy's view) -------------------------------------------------------------------------------
    def hit_blocks(self, r: Request) -> int:
        """Blocks of waiting request r's prompt that admitting it now would reuse. Memoised: still right while the
        block after the hit is uncached and the hit's last block cached."""
        refs = self.refs
        memo = self._memo.get(r.id)
        if memo is not None:
            h, nxt, last = memo
            if (nxt is None or nxt not in refs) and (last is None or last in refs):
                return h
        chain, pb, cacheable = self._chain(r)
        n = min(cacheable, (r.num_prompt - 1) // self.block_size)
        h = self._leading(chain, pb, n, refs.__contains__)
        nxt = self._key(chain, pb, h) if h < n else None
        self._memo[r.id] = (h, nxt, self._key(chain, pb, h - 1) if h else None)
        return h

    def hit(self, r: Request) -> PrefixHit:
        h = self.hit_blocks(r)
        if not h:
            return NO_HIT
        chain, pb, _ = self._chain(r)
        refs = self.refs
        return PrefixHit(h * self.block_size, self._leading(chain, pb, h, lambda k: refs[k] > 0))

    def exclusive_blocks(self, r: Request) -> int:
        """Blocks of running request r that no other request holds: what preempting it frees."""
        keys = self._held.get(r.id)
        if not keys:
            return r.blocks
        refs = self.refs
        lo, hi = 0, len(keys)  # keys[:lo] are held by others too
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if refs[keys[mid - 1]] > 1:
                lo = mid
            else:
                hi = mid - 1
        return r.blocks - lo

    # --- changes (the engine's) -----------------------------------------------------------------------------------
    def reuse(self, r: Request) -> int:
        """Admission, first step: hold the cached prefix r reuses (out of the free queue if evictable). Returns the
        hit in blocks."""
        h = self.hit_blocks(r)
        del self._memo[r.id]
        chain, pb, _ = self._chain(r)
        keys = self._keys(chain, pb, 0, h)
        refs, queue = self.refs, self._queue
        for k in keys:
            c = refs[k]
            if not c:
                del queue[k]
                self.free -= 1
            refs[k] = c + 1
        self._held[r.id] = keys
        return h

    def take(self, n: int) -> None:
        """n blocks for a request's own use, the least recently freed first (a cached one loses its key)."""
        if n > self.free:
            raise RuntimeError(f"KV cache: {n} blocks asked, {self.free} free")
        self.free -= n
        queue, refs = self._queue, self.refs
        while n:
            k, c = queue.popitem(last=False)
            if k.__class__ is int:
                del refs[k]
                self.evicted += 1
                n -= 1
            elif c > n:
                queue[k] = c - n
                queue.move_to_end(k, last=False)
                n = 0
            else:
                n -= c

    def cache(self, r: Request) -> None:
        """After a prefill chunk: key r's newly full, cacheable blocks. A block some other request cached meanwhile is
        shared instead, and r's copy freed."""
        chain, pb, cacheable = self._chain(r)
        full = min(r.computed // self.block_size, cacheable)
        keys = self._held[r.id]
        if full <= len(keys):
            return
        refs, queue = self.refs, self._queue
        dropped = 0
        for k in self._keys(chain, pb, len(keys), full):
            c = refs.get(k)
            if c is None:
                refs[k] = 1
            else:
                if not c:
                    del queue[k]
                    self.free -= 1
                refs[k] = c + 1
                dropped += 1
            keys.append(k)
        if dropped:
            queue[object()] = dropped
            self.free += dropped

    def release(self, r: Request) -> None:
        """r leaves (finished or preempted) holding r.blocks: its own blocks, then its cached ones tail first, join the
        free queue; a cached block others hold stays held."""
        keys = self._held.pop(r.id, [])
        refs, queue = self.refs, self._queue
        freed = r.blocks - len(keys)
        if freed:
            queue[object()] = freed
        for k in reversed(keys):
            c = refs[k] - 1
            refs[k] = c
            if not c:
                queue[k] = 1
                freed += 1
        self.free += freed

    def forget(self, r: Request) -> None:
        """r is done with this engine (finished or rejected): drop what was kept for its lookups."""
        self._chains.pop(r.id, None)
        self._memo.pop(r.id, None)

    @property
    def cached_free(self) -> int:
        """Evictable blocks: cached, no holder."""
        return sum(1 for c in self.refs.values() if not c)

    def check(self, running: Iterable[Request]) -> None:
        """Raise AssertionError unless the books balance: reference counts equal the holders, every free-queue key is
        unreferenced, and free + held == total."""
        running = list(running)
        holders = Counter(k for r in running for k in self._held.get(r.id, []))
        assert set(self._held) <= {r.id for r in running}, "a request left holding blocks"
        for k, c in self.refs.items():
            assert c >= 0 and c == holders[k], f"block {k}: {c} references, {holders[k]} holders"
        assert all(k in self.refs for k in holders), "a held block lost its key (evicted while referenced)"
        assert sum(self._queue.values()) == self.free, "free count off the free queue"
        for k in self._queue:
            if k.__class__ is int:
                assert self.refs[k] == 0, f"block {k} is both free and held"
        own = sum(r.blocks - len(self._held.get(r.id, [])) for r in running)
        assert own >= 0 and self.free + own + sum(1 for c in self.refs.values() if c) == self.total, "blocks lost"
