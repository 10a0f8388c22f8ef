"""The simulated engine's KV blocks with prefix caching, kept as vLLM v1's KV cache manager keeps them.

- Keys. A full block of a prompt is cached under a key standing for its whole prefix: the chained prefix id
  (`workload.prefix`) of the request's trace block that holds the block's last token, and the block's position in
  that trace block (a 512-token trace block spans 32 blocks of 16). Only full blocks the ids cover are cached, as
  their tokens are computed. The partial last block and an uncovered tail are not: they have no ids. vLLM hashes full
  decode blocks too. A request whose ids go on over its answer (`Request.answer_ids`: a chat session whose next turn
  sends back the answer the engine generated) has its full decode blocks cached as the decode fills them, up to its
  computed tokens (the last generated token is never computed, as in vLLM). Otherwise (a replayed trace, whose next
  prompt holds the recorded answer, which no engine generated) generated tokens have no ids and are not cached, nor
  are they after a preemption by recompute, when they are prefilled again.
- Reference counts. A cached block is held by every running request whose prompt uses it. When the last holder leaves
  (finished or preempted), the block stays cached and joins the free queue. vLLM frees a request's blocks tail first,
  so a prefix's last blocks are evicted before its first ones. Allocation takes the least recently freed block and
  evicts its key.
- Free blocks are counted as vLLM counts them: never used, uncached, and cached without holders (evictable) alike.
- Admission reuses the longest cached prefix in whole blocks, never the whole prompt. The hit is capped at
  num_prompt - 1 tokens (vLLM's max_cache_hit_length), so the last token is always computed. Admission costs the
  prompt's blocks less the hit blocks that running requests already hold.
- Two requests may prefill the same new prefix at once. vLLM then keeps both copies cached. Here the later one drops
  its copy and holds the cached one instead, as a radix cache would. That frees a block earlier than vLLM does.

The books are kept run-length encoded, one segment per trace block. The blocks a request holds are a prefix of its
chain, and it frees them tail first. So the cached blocks of a segment are its first `size`, and the held ones its
first `top` (the longest holder's). The free ones, `top..size`, sit in the free queue as runs, taken from the top
down. Along a prompt, the cached (and the held) blocks form a prefix. A lookup therefore binary-searches the prompt's
segments, and admitting or releasing a request costs one step per trace block, not per block. `tests/
prefix_reference.py` keeps the same books block by block, and a test checks that the two agree.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterable

from llmsched.policies.interface import NO_HIT, PrefixHit
from llmsched.workload.prefix import chain_ids
from llmsched.workload.request import Request


class _Segment:
    """The blocks of one trace block (one chained prefix id)."""

    __slots__ = ("key", "size", "top", "holders", "runs")

    def __init__(self, key: int) -> None:
        self.key = key
        self.size = 0  # leading blocks cached
        self.top = 0  # leading blocks held (the longest holder's)
        self.holders: dict[int, int] = {}  # blocks held -> requests holding that many
        self.runs: list[_Run] = []  # its free blocks top..size in the free queue, highest (first queued) first


class _Run:
    """Free blocks queued together: blocks lo..hi-1 of a segment (taken from hi down), or hi uncached ones."""

    __slots__ = ("seg", "lo", "hi")

    def __init__(self, seg: _Segment | None, lo: int, hi: int) -> None:
        self.seg, self.lo, self.hi = seg, lo, hi


_Layout = tuple[list[int], list[int], list[int], int]  # segment keys, first block, end block; cacheable blocks
_NONE: _Layout = ([], [], [], 0)


class PrefixCache:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.total = num_blocks
        self.block_size = block_size
        self.free = num_blocks  # blocks no request holds: uncached, or cached and evictable
        self.segments: dict[int, _Segment] = {}
        self._queue: OrderedDict[_Run, None] = OrderedDict()  # free blocks, least recently freed first
        if num_blocks:
            self._queue[_Run(None, 0, num_blocks)] = None
        self._held: dict[int, int] = {}  # request id -> leading blocks of its prompt it holds through the cache
        self._layouts: dict[int, _Layout] = {}
        self._memo: dict[int, tuple[int, int | None, int, int | None, int]] = {}  # request id -> hit, next, last
        self.evicted = 0

    # --- a prompt's segments -------------------------------------------------------------------------------------
    def _layout(self, r: Request) -> _Layout:
        """r's cacheable blocks by trace block: keys, first and end block of each (non-empty ones only)."""
        lay = self._layouts.get(r.id)
        if lay is None:
            pb, bs = r.prefix_block, self.block_size
            cacheable = min(len(r.prefix_ids) * pb, r.id_tokens) // bs if pb > 0 else 0
            keys, starts, ends = [], [], []
            if cacheable and pb % bs == 0:  # the common case: whole blocks per trace block
                per = pb // bs
                keys = chain_ids(r.prefix_ids[: -(-cacheable // per)])
                starts = list(range(0, cacheable, per))
                ends = [*starts[1:], cacheable]
            elif cacheable:
                for t, key in enumerate(chain_ids(r.prefix_ids)):
                    j0, j1 = -(-(t * pb + 1) // bs) - 1, min((t + 1) * pb // bs, cacheable)
                    if j0 >= cacheable:
                        break
                    if j1 > j0:  # a block's trace block holds its last token
                        keys.append(key)
                        starts.append(j0)
                        ends.append(j1)
            lay = (keys, starts, ends, cacheable) if keys else _NONE
            self._layouts[r.id] = lay
        return lay

    def _leading(self, lay: _Layout, n: int, held: bool) -> int:
        """How many of the first n blocks are cached (held: held by some request); they form a prefix."""
        keys, starts, ends, _ = lay
        segments = self.segments
        lo, hi = 0, len(keys)  # find the first segment not wholly cached (held)
        while lo < hi:
            mid = (lo + hi) >> 1
            seg = segments.get(keys[mid])
            if seg is not None and (seg.top if held else seg.size) >= ends[mid] - starts[mid]:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(keys):
            return min(n, ends[-1]) if keys else 0
        seg = segments.get(keys[lo])
        return min(n, starts[lo] + ((seg.top if held else seg.size) if seg is not None else 0))

    @staticmethod
    def _at(lay: _Layout, j: int) -> tuple[int, int]:
        """Block j's segment key and its index there."""
        keys, starts, _, _ = lay
        s = bisect_right(starts, j) - 1
        return keys[s], j - starts[s]

    # --- lookups (the policy's view) -------------------------------------------------------------------------------
    def hit_blocks(self, r: Request) -> int:
        """Blocks of waiting request r's prompt that admitting it now would reuse. Memoised: still right while the
        block after the hit is uncached and the hit's last block cached (two lookups)."""
        segments = self.segments
        memo = self._memo.get(r.id)
        if memo is not None:
            h, k_next, i_next, k_last, i_last = memo
            nxt = segments.get(k_next) if k_next is not None else None
            if nxt is None or nxt.size <= i_next:
                last = segments.get(k_last) if k_last is not None else None
                if k_last is None or (last is not None and last.size > i_last):
                    return h
        lay = self._layout(r)
        n = min(lay[3], (r.num_prompt - 1) // self.block_size)
        h = self._leading(lay, n, held=False)
        k_next, i_next = self._at(lay, h) if h < n else (None, 0)
        k_last, i_last = self._at(lay, h - 1) if h else (None, 0)
        self._memo[r.id] = (h, k_next, i_next, k_last, i_last)
        return h

    def hit(self, r: Request) -> PrefixHit:
        h = self.hit_blocks(r)
        if not h:
            return NO_HIT
        return PrefixHit(h * self.block_size, self._leading(self._layout(r), h, held=True))

    def exclusive_blocks(self, r: Request) -> int:
        """Blocks of running request r that no other request holds: what preempting it frees."""
        m = self._held.get(r.id, 0)
        if not m:
            return r.blocks
        keys, starts, ends, _ = self._layout(r)
        shared = 0
        for s in range(len(keys)):
            if starts[s] >= m:
                break
            h = min(m, ends[s]) - starts[s]
            seg = self.segments[keys[s]]
            others = (
                seg.top if h < seg.top or seg.holders[h] > 1 else max((k for k in seg.holders if k != h), default=0)
            )
            shared += min(h, others)
        return r.blocks - shared

    # --- changes (the engine's) -----------------------------------------------------------------------------------
    def _hold(self, seg: _Segment, old: int, new: int) -> None:
        """One request now holds `new` leading blocks of `seg` instead of `old` (0: none); blocks it is the first to
        hold leave the free queue, blocks nobody holds any more join it."""
        holders = seg.holders
        if old:
            c = holders[old] - 1
            if c:
                holders[old] = c
            else:
                del holders[old]
        if new:
            holders[new] = holders.get(new, 0) + 1
        top = seg.top
        if new >= top:
            new_top = new
        elif old == top and old not in holders:
            new_top = max(holders, default=0)
        else:
            return
        if new_top > top:  # blocks top..new_top-1 that were cached and free: out of the queue (lowest runs)
            end = min(new_top, seg.size)
            if end > top:
                self.free -= end - top
                runs = seg.runs
                while runs and runs[-1].lo < end:
                    run = runs[-1]
                    if run.hi <= end:
                        del self._queue[run]
                        runs.pop()
                    else:
                        run.lo = end
                        break
        elif new_top < top:
            run = _Run(seg, new_top, top)
            self._queue[run] = None
            seg.runs.append(run)
            self.free += top - new_top
        seg.top = new_top

    def reuse(self, r: Request) -> int:
        """Admission, first step: hold the cached prefix r reuses (out of the free queue if evictable). Returns the
        hit in blocks."""
        h = self.hit_blocks(r)
        del self._memo[r.id]
        self._held[r.id] = h
        if h:
            keys, starts, ends, _ = self._layout(r)
            segments = self.segments
            for s in range(len(keys)):
                if starts[s] >= h:
                    break
                self._hold(segments[keys[s]], 0, min(h, ends[s]) - starts[s])
        return h

    def take(self, n: int) -> None:
        """n blocks for a request's own use, the least recently freed first (a cached one loses its key)."""
        if n > self.free:
            raise RuntimeError(f"KV cache: {n} blocks asked, {self.free} free")
        self.free -= n
        queue = self._queue
        while n:
            run = next(iter(queue))
            k = run.hi - run.lo
            if k > n:
                k = n
            run.hi -= k
            n -= k
            seg = run.seg
            if seg is not None:
                seg.size -= k
                self.evicted += k
            if run.hi == run.lo:
                queue.popitem(last=False)
                if seg is not None:
                    del seg.runs[0]
                    if not seg.size:
                        del self.segments[seg.key]

    def cache(self, r: Request) -> None:
        """After a prefill chunk (or a decode step that fills a block of an answer with ids): cache r's newly full,
        cacheable blocks. A block some other request cached meanwhile is shared instead, and r's copy freed."""
        keys, starts, ends, cacheable = self._layout(r)
        m = self._held[r.id]
        full = r.computed // self.block_size
        if full > cacheable:
            full = cacheable
        if full <= m:
            return
        self._held[r.id] = full
        segments = self.segments
        dropped = 0
        for s in range(bisect_right(starts, m) - 1, len(keys)):
            j0, j1 = starts[s], ends[s]
            if j0 >= full:
                break
            old = (m if m < j1 else j1) - j0
            if old < 0:
                old = 0
            new = (full if full < j1 else j1) - j0
            if new <= old:
                continue
            key = keys[s]
            seg = segments.get(key)
            if seg is None:  # nobody cached this trace block: r's blocks start it
                seg = segments[key] = _Segment(key)
                seg.size = seg.top = new
                seg.holders[new] = 1
                continue
            size = seg.size
            if size > old:  # blocks old..size-1 were cached already: r shares them, its copies go free
                dropped += (new if new < size else size) - old
            self._hold(seg, old, new)
            if new > size:
                seg.size = new
        if dropped:
            self._queue[_Run(None, 0, dropped)] = None
            self.free += dropped

    def release(self, r: Request) -> None:
        """r leaves (finished or preempted) holding r.blocks: its own blocks, then its cached ones tail first, join the
        free queue; a cached block others hold stays held."""
        m = self._held.pop(r.id, 0)
        own = r.blocks - m
        if own:
            self._queue[_Run(None, 0, own)] = None
            self.free += own
        if m:
            keys, starts, ends, _ = self._layout(r)
            segments = self.segments
            queue = self._queue
            for s in range(bisect_right(starts, m - 1) - 1, -1, -1):
                seg = segments[keys[s]]
                j1 = ends[s]
                h = (m if m < j1 else j1) - starts[s]
                holders = seg.holders
                if len(holders) == 1 and holders.get(h) == 1:  # its only holder: all its held blocks go free
                    holders.clear()
                    run = _Run(seg, 0, h)
                    queue[run] = None
                    seg.runs.append(run)
                    seg.top = 0
                    self.free += h
                else:
                    self._hold(seg, h, 0)

    def forget(self, r: Request) -> None:
        """r is done with this engine (finished or rejected): drop what was kept for its lookups."""
        self._layouts.pop(r.id, None)
        self._memo.pop(r.id, None)

    # --- for tests --------------------------------------------------------------------------------------------------
    @property
    def cached_free(self) -> int:
        """Evictable blocks: cached, no holder."""
        return sum(seg.size - seg.top for seg in self.segments.values())

    def check(self, running: Iterable[Request]) -> None:
        """Raise AssertionError unless the books balance: each segment's holders are the running requests holding it,
        its free runs cover exactly its unheld cached blocks, the free count is the queue's, and free + held ==
        total (no block lost, none evicted while held)."""
        running = list(running)
        assert set(self._held) <= {r.id for r in running}, "a request left holding blocks"
        holders: dict[int, dict[int, int]] = {}
        own = 0
        for r in running:
            m = self._held.get(r.id, 0)
            own += r.blocks - m
            keys, starts, ends, _ = self._layout(r)
            for s in range(len(keys)):
                if starts[s] < m:
                    h = min(m, ends[s]) - starts[s]
                    counts = holders.setdefault(keys[s], {})
                    counts[h] = counts.get(h, 0) + 1
        assert own >= 0, "a request holds fewer blocks than it holds through the cache"
        for key, seg in self.segments.items():
            assert seg.key == key and seg.size > 0, f"segment {key}: empty or misfiled"
            assert seg.holders == holders.get(key, {}), f"segment {key}: holders {seg.holders} are not the requests'"
            assert seg.top == max(seg.holders, default=0) <= seg.size, f"segment {key}: held beyond cached"
            covered = seg.size
            for run in seg.runs:
                assert run.seg is seg and run.hi == covered and run.lo < run.hi, f"segment {key}: runs out of order"
                covered = run.lo
            assert covered == seg.top, f"segment {key}: free runs do not cover its unheld blocks"
        assert set(holders) <= set(self.segments), "a held block was evicted"
        queued = 0
        for run in self._queue:
            queued += run.hi - run.lo
            assert run.seg is None or self.segments.get(run.seg.key) is run.seg, "a queued run of a gone segment"
        assert queued == self.free, "free count off the free queue"
        held = sum(seg.top for seg in self.segments.values())
        assert self.free + held + own == self.total, "blocks lost"
