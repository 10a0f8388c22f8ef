"""A host-memory (CPU) tier under the simulated GPU prefix cache, kept as vLLM 0.32's native KV offloading keeps it
(`--kv-offloading-size GiB`, `kv_offloading_backend="native"`: the OffloadingConnector over a CPUOffloadingManager
with its default LRU policy and one GPU block per CPU chunk).

- What it stores. Write-through: every full prompt block a request computes is stored as the step that computed it
  ends (the connector's store jobs), unless the tier has it. Blocks a request reused (from the GPU cache or loaded
  from this tier) are not stored again by it. Only blocks with keys are stored (the GPU cache's cacheable blocks).
- How it evicts. Least recently used among the blocks not being loaded. A block's use is its store, and the end of
  a request that touched it, whose blocks are ranked tail first (so a prefix's first blocks are evicted last), as
  vLLM's LRU policy ranks them. A store that cannot evict enough stores fewer blocks.
- How a hit is used. At admission, after the GPU cache's hit, the blocks that follow it and that this tier holds
  (leading, as vLLM's maximal prefix lookup takes them, capped at the prompt's last token) are loaded over the host
  link rather than prefilled. The engine models that (`sim/engine.py`).

The books are run-length encoded like the GPU cache's: per trace block (chained prefix id), the number of leading
blocks stored, in one LRU order. Recency is therefore kept per trace block (32 blocks of 16 in the Mooncake trace),
not per block, and eviction takes the least recent trace block's blocks from its tail. A store whose trace block
would leave a gap (its earlier blocks evicted here) is dropped for that trace block: vLLM would store it, but its
lookup, which walks from the GPU hit, reaches it only when the GPU cache holds the gap.
"""

from __future__ import annotations

from collections import OrderedDict

from llmsched.sim.kv_cache import PrefixCache
from llmsched.workload.request import Request


class CpuTier:
    """Leading blocks stored per trace block, least recently used first, bounded to `capacity` blocks."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.stored: OrderedDict[int, int] = OrderedDict()  # trace-block key -> its leading blocks stored
        self.evicted = 0

    def store(self, key: int, lo: int, hi: int) -> int:
        """Blocks lo..hi-1 of trace block `key` were computed; store those missing. Returns the blocks stored."""
        have = self.stored.get(key, 0)
        if have >= hi or have < lo:  # all there, or a gap before them
            return 0
        need = hi - have
        stored = self.stored
        while self.used + need > self.capacity:
            victim = next(iter(stored), None)
            if victim is None or victim == key:  # nothing else to evict: store what fits
                need = self.capacity - self.used
                break
            k = min(stored[victim], self.used + need - self.capacity)
            self.used -= k
            self.evicted += k
            if k == stored[victim]:
                del stored[victim]
            else:
                stored[victim] -= k
        if need <= 0:
            return 0
        stored[key] = have + need
        stored.move_to_end(key)
        self.used += need
        return need

    def touch(self, keys: list[int]) -> None:
        """A request that used these trace blocks (in prompt order) ended: most recent, its first ones last."""
        stored = self.stored
        for key in reversed(keys):
            if key in stored:
                stored.move_to_end(key)


class OffloadingCache(PrefixCache):
    """The GPU prefix cache with a CPU tier of `cpu_blocks` blocks beneath it."""

    def __init__(self, num_blocks: int, block_size: int, cpu_blocks: int) -> None:
        super().__init__(num_blocks, block_size)
        self.cpu = CpuTier(cpu_blocks)

    def cpu_hit(self, r: Request, gpu_hit: int) -> int:
        """Blocks of waiting request r's prompt right after its GPU hit (`gpu_hit` blocks) that the CPU tier holds:
        what admitting it now would load, capped as the GPU hit is (never the prompt's last token)."""
        keys, starts, ends, cacheable = self._layout(r)
        n = min(cacheable, (r.num_prompt - 1) // self.block_size)
        if gpu_hit >= n:
            return 0
        stored = self.cpu.stored
        j = gpu_hit
        for s in range(len(keys)):
            if ends[s] <= j:
                continue
            have = starts[s] + stored.get(keys[s], 0)
            if have <= j:
                break
            j = min(have, ends[s])
            if j < ends[s]:
                break
        return min(j, n) - gpu_hit

    def load(self, r: Request, blocks: int) -> None:
        """r, holding its GPU hit, takes `blocks` blocks for the CPU hit that follows and holds them as cached (the
        GPU prefix cache keeps loaded blocks); its computed tokens cover the hit and the load."""
        self.take(blocks)
        r.blocks += blocks
        r.computed = r.blocks * self.block_size
        PrefixCache.cache(self, r)  # not stored back: the CPU tier has them

    def cache(self, r: Request) -> None:
        m = self._held.get(r.id, 0)
        super().cache(r)
        full = self._held.get(r.id, 0)
        if full > m:  # blocks m..full-1 newly computed: stored as their step ends
            keys, starts, ends, _ = self._layout(r)
            for s in range(len(keys)):
                j0, j1 = starts[s], ends[s]
                if j1 <= m:
                    continue
                if j0 >= full:
                    break
                self.cpu.store(keys[s], max(m, j0) - j0, min(full, j1) - j0)

    def forget(self, r: Request) -> None:
        lay = self._layouts.get(r.id)
        if lay is not None and lay[0]:
            self.cpu.touch(lay[0])
        super().forget(r)

    def check_cpu(self) -> None:
        """Raise AssertionError unless the CPU tier's books balance and stay within its size."""
        cpu = self.cpu
        assert all(v > 0 for v in cpu.stored.values()), "an empty trace block kept"
        assert sum(cpu.stored.values()) == cpu.used, "CPU tier count off its books"
        assert 0 <= cpu.used <= cpu.capacity, "CPU tier beyond its size"
