"""Measure batch times of a model's shape on this machine's GPU (or CPU) with random weights: no download.

One forward = embed; per layer RMSNorm, fused QKV, RoPE, K/V written into a cache, attention
(`scaled_dot_product_attention`: causal aligned to the chunk's end for the prefill chunk, the GQA group
folded into the query length for decodes), O-proj, RMSNorm, fused gate/up, SiLU * up, down; final norm and
LM head on the last token of each sequence; argmax. Linear layers run on all tokens of the batch at once,
attention per kind of sequence. On CUDA each batch shape is captured in a CUDA graph and its replays are
timed with CUDA events; on CPU the eager forward is timed with a wall clock. Writes the profile CSV format
of `llmsched.perf.fitted` (mixed rows included). torch is imported lazily: it is an optional extra.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmsched.errors import UserError
from llmsched.perf.fitted import write_profile
from llmsched.perf.specs import ModelSpec


@dataclass(frozen=True)
class Shape:
    prefill_tokens: int
    prefill_context: int
    decodes: int
    decode_context: int


def _grid_default() -> list[list[Shape]]:
    """The shared H100 file's shapes, plus mixed batches; one list per row family."""
    prefill = [Shape(p, 0, 0, 0) for p in (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)]
    context = [Shape(p, c, 0, 0) for p in (128, 256, 512) for c in (512, 1024, 2048, 4096, 8192)]
    max_decodes = {128: 256, 512: 256, 1024: 128, 2048: 64, 4096: 32}
    decode = [Shape(0, 0, 2**i, c) for c, top in max_decodes.items() for i in range(int(math.log2(top)) + 1)]
    mixed = [
        Shape(p, pc, d, dc) for p, pc, d, dc in itertools.product((128, 256, 512), (0, 2048), (16, 64), (512, 2048))
    ]
    return [prefill, context, decode, mixed]


def _grid_quick() -> list[list[Shape]]:
    """A few shapes of each family: a smoke test, or a tiny model on a CPU."""
    prefill = [Shape(p, 0, 0, 0) for p in (8, 16, 32, 64)]
    context = [Shape(p, c, 0, 0) for p in (8, 32) for c in (16, 64)]
    decode = [Shape(0, 0, d, c) for c in (8, 64) for d in (1, 2, 4, 8)]
    mixed = [Shape(16, 0, 2, 16), Shape(32, 16, 4, 64)]
    return [prefill, context, decode, mixed]


GRIDS: dict[str, Callable[[], list[list[Shape]]]] = {"default": _grid_default, "quick": _grid_quick}


def grid(name: str) -> list[Shape]:
    """Shapes in round-robin order over the families, so that a profile cut short still holds each family."""
    if name not in GRIDS:
        raise UserError(f"--grid is {name!r}, expected one of {', '.join(GRIDS)}")
    families = GRIDS[name]()
    out: list[Shape] = []
    for group in itertools.zip_longest(*families):
        out.extend(s for s in group if s is not None)
    return out


@dataclass(frozen=True)
class Timing:
    shape: Shape
    times_ms: tuple[float, ...]

    @property
    def columns(self) -> tuple[int, int, int, int, tuple[float, ...]]:
        s = self.shape
        return s.prefill_tokens, s.prefill_context, s.decodes, s.decode_context, self.times_ms


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise UserError(
            "--backend torch needs PyTorch, which is not installed: pip install 'llmsched[profile]'"
        ) from None
    return torch


class RandomModel:
    """The model's shape with random weights (timing does not depend on values)."""

    def __init__(self, spec: ModelSpec, device: str, dtype: Any, seed: int = 0) -> None:
        torch = import_torch()
        self.torch, self.spec, self.device, self.dtype = torch, spec, device, dtype
        gen = torch.Generator(device=device).manual_seed(seed)
        m = spec

        def weight(*shape: int) -> Any:
            w = torch.empty(*shape, device=device, dtype=dtype)
            return w.normal_(0.0, 0.02, generator=gen)

        def ones(n: int) -> Any:
            return torch.ones(n, device=device, dtype=dtype)

        qkv_out = (m.heads + 2 * m.kv_heads) * m.head_dim
        self.embed = weight(m.vocab, m.hidden)
        self.layers = [
            {
                "norm1": ones(m.hidden),
                "qkv": weight(qkv_out, m.hidden),
                "o": weight(m.hidden, m.heads * m.head_dim),
                "norm2": ones(m.hidden),
                "gate_up": weight(2 * m.ffn, m.hidden),
                "down": weight(m.hidden, m.ffn),
            }
            for _ in range(m.layers)
        ]
        self.norm = ones(m.hidden)
        self.lm_head = weight(m.vocab, m.hidden)
        inv = 1.0 / (10000.0 ** (torch.arange(0, m.head_dim, 2, device=device, dtype=torch.float32) / m.head_dim))
        self.inv_freq = inv

    def rms_norm(self, x: Any, w: Any) -> Any:
        torch = self.torch
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
        return w * h.to(x.dtype)

    def rope_tables(self, positions: Any) -> tuple[Any, Any]:
        torch = self.torch
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype)[:, None, :], emb.sin().to(self.dtype)[:, None, :]

    @staticmethod
    def rotate(x: Any, cos: Any, sin: Any, torch: Any) -> Any:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


class Batch:
    """Static inputs, caches and a forward for one batch shape (what a CUDA graph captures)."""

    def __init__(self, model: RandomModel, shape: Shape, gqa_native: bool) -> None:
        torch, m, dev = model.torch, model.spec, model.device
        self.model, self.shape, self.gqa_native = model, shape, gqa_native
        p, pc, d, dc = shape.prefill_tokens, shape.prefill_context, shape.decodes, shape.decode_context
        tokens = p + d
        self.ids = torch.randint(0, m.vocab, (tokens,), device=dev, generator=torch.Generator(dev).manual_seed(1))
        positions = torch.cat(
            (torch.arange(pc, pc + p, device=dev), torch.full((d,), dc, device=dev, dtype=torch.long))
        )
        self.cos, self.sin = model.rope_tables(positions)
        last = ([p - 1] if p else []) + list(range(p, p + d))
        self.last = torch.tensor(last, device=dev, dtype=torch.long)
        kv = (m.kv_heads, m.head_dim)
        # K and V of each layer: (1, kv_heads, context + chunk, head_dim) for the chunk's sequence and
        # (decodes, kv_heads, context + 1, head_dim) for the decodes. Random contents: only their size matters.
        self.cache_p = [torch.zeros(2, 1, kv[0], pc + p, kv[1], device=dev, dtype=model.dtype) for _ in range(m.layers)]
        self.cache_d = [torch.zeros(2, d, kv[0], dc + 1, kv[1], device=dev, dtype=model.dtype) for _ in range(m.layers)]
        if p and pc:
            from torch.nn.attention.bias import causal_lower_right

            self.prefill_mask: Any = causal_lower_right(p, pc + p)
        else:
            self.prefill_mask = None

    def forward(self) -> Any:
        model, torch, m = self.model, self.model.torch, self.model.spec
        sdpa = torch.nn.functional.scaled_dot_product_attention
        p, pc, d, dc = (
            self.shape.prefill_tokens,
            self.shape.prefill_context,
            self.shape.decodes,
            self.shape.decode_context,
        )
        group = m.heads // m.kv_heads
        x = model.embed[self.ids]
        for layer, cache_p, cache_d in zip(model.layers, self.cache_p, self.cache_d, strict=True):
            h = model.rms_norm(x, layer["norm1"])
            qkv = torch.nn.functional.linear(h, layer["qkv"])
            q, k, v = qkv.split([m.heads * m.head_dim, m.kv_heads * m.head_dim, m.kv_heads * m.head_dim], dim=-1)
            q = RandomModel.rotate(q.view(-1, m.heads, m.head_dim), self.cos, self.sin, torch)
            k = RandomModel.rotate(k.view(-1, m.kv_heads, m.head_dim), self.cos, self.sin, torch)
            v = v.view(-1, m.kv_heads, m.head_dim)
            outs = []
            if p:
                cache_p[0, 0, :, pc:] = k[:p].transpose(0, 1)
                cache_p[1, 0, :, pc:] = v[:p].transpose(0, 1)
                qp = q[:p].transpose(0, 1).unsqueeze(0)
                kp, vp = cache_p[0], cache_p[1]
                if not self.gqa_native:
                    kp, vp = kp.repeat_interleave(group, dim=1), vp.repeat_interleave(group, dim=1)
                extra = {"enable_gqa": True} if self.gqa_native else {}
                if self.prefill_mask is None:
                    o = sdpa(qp, kp, vp, is_causal=True, **extra)
                else:
                    o = sdpa(qp, kp, vp, attn_mask=self.prefill_mask, **extra)
                outs.append(o[0].transpose(0, 1).reshape(p, m.heads * m.head_dim))
            if d:
                cache_d[0, :, :, dc] = k[p:]
                cache_d[1, :, :, dc] = v[p:]
                qd = q[p:].view(d, m.kv_heads, group, m.head_dim)  # the GQA group as the query length
                o = sdpa(qd, cache_d[0], cache_d[1])
                outs.append(o.reshape(d, m.heads * m.head_dim))
            attn = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
            x = x + torch.nn.functional.linear(attn, layer["o"])
            h = model.rms_norm(x, layer["norm2"])
            gate, up = torch.nn.functional.linear(h, layer["gate_up"]).chunk(2, dim=-1)
            x = x + torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, layer["down"])
        h = model.rms_norm(x[self.last], model.norm)
        return torch.nn.functional.linear(h, model.lm_head).argmax(dim=-1)


def _gqa_native_works(model: RandomModel) -> bool:
    """Whether SDPA takes fewer K/V heads than query heads with a lower-right causal mask here."""
    torch, m = model.torch, model.spec
    from torch.nn.attention.bias import causal_lower_right

    q = torch.randn(1, m.heads, 8, m.head_dim, device=model.device, dtype=model.dtype)
    k = torch.randn(1, m.kv_heads, 24, m.head_dim, device=model.device, dtype=model.dtype)
    try:
        got = torch.nn.functional.scaled_dot_product_attention(
            q, k, k, attn_mask=causal_lower_right(8, 24), enable_gqa=True
        )
    except (RuntimeError, TypeError, NotImplementedError):
        return False
    group = m.heads // m.kv_heads
    kk = k.repeat_interleave(group, dim=1)
    ref = torch.nn.functional.scaled_dot_product_attention(q, kk, kk, attn_mask=causal_lower_right(8, 24).to_dense())
    return bool(torch.allclose(got.float(), ref.float(), atol=2e-2, rtol=2e-2))


def _time_cuda(batch: Batch, warmup: int, reps: int) -> list[float]:
    torch = batch.model.torch
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        batch.forward()  # eager warm-up: cuBLAS handles, kernel selection
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        batch.forward()
    for _ in range(warmup):
        graph.replay()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize()
    times = [start.elapsed_time(end) for start, end in events]
    del graph
    return times


def _time_cpu(batch: Batch, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        batch.forward()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        batch.forward()
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def _within_memory(
    spec: ModelSpec, shapes: list[Shape], device: str, dtype: Any, torch: Any
) -> tuple[list[Shape], list[tuple[Shape, str]]]:
    """The shapes whose weights, caches and activations fit in the device's free memory, and the others with why;
    a model whose weights alone do not fit is refused before anything is allocated."""
    from llmsched.perf.profile_memory import available_bytes, gb, needed_bytes, shape_bytes, weight_bytes

    try:
        free, source = available_bytes(device, torch)
    except OSError:
        return shapes, []
    elem = torch.finfo(dtype).bits // 8
    weights = weight_bytes(spec, elem)
    if needed_bytes(weights, 0) > free:
        raise UserError(
            f"{spec.name} needs about {gb(needed_bytes(weights, 0))} on {device} ({gb(weights)} of "
            f"{str(dtype).removeprefix('torch.')} weights), "
            f"{gb(free)} available ({source}): nothing was allocated; profile it on a device with more memory"
        )
    fits, skipped = [], []
    for shape in shapes:
        need = needed_bytes(weights, shape_bytes(spec, *dataclasses.astuple(shape), elem))
        if need <= free:
            fits.append(shape)
        else:
            skipped.append((shape, f"needs about {gb(need)} with the weights, {gb(free)} available ({source})"))
    if not fits:
        raise UserError(f"no shape of the grid fits in {gb(free)} ({source}) beside {spec.name}'s weights")
    return fits, skipped


@dataclass(frozen=True)
class ProfileResult:
    timings: list[Timing]
    skipped: list[tuple[Shape, str]]
    stopped_at_budget: int  # shapes not measured because the budget ran out
    setup_s: float
    total_s: float
    attention: str


def run_profile(
    spec: ModelSpec,
    out: str | Path,
    device: str | None = None,
    grid_name: str = "default",
    budget_s: float | None = None,
    warmup: int = 3,
    reps: int = 10,
    progress: bool = True,
) -> ProfileResult:
    """Time every shape of the grid (until the budget runs out) and write the profile CSV to `out`."""
    from tqdm import tqdm

    t_start = time.perf_counter()
    shapes = grid(grid_name)
    torch = import_torch()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        raise UserError(f"--device is {device!r}, expected cuda or cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu)")
    if warmup < 0 or reps < 1:
        raise UserError(f"--warmup {warmup} / --reps {reps}: expected warmup >= 0 and reps >= 1")
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shapes, skipped = _within_memory(spec, shapes, device, dtype, torch)
    torch.manual_seed(0)
    with torch.no_grad():
        model = RandomModel(spec, device, dtype)
        gqa_native = _gqa_native_works(model)
        if device == "cuda":
            torch.cuda.synchronize()
        setup_s = time.perf_counter() - t_start
        timer = _time_cuda if device == "cuda" else _time_cpu
        timings: list[Timing] = []
        left = 0
        bar = tqdm(shapes, desc=f"profile {spec.name} on {device}", unit="shape", file=sys.stderr, disable=not progress)
        for i, shape in enumerate(bar):
            if budget_s is not None and time.perf_counter() - t_start >= budget_s:
                left = len(shapes) - i
                break
            try:
                batch = Batch(model, shape, gqa_native)
                timings.append(Timing(shape, tuple(timer(batch, warmup, reps))))
            except torch.OutOfMemoryError:
                skipped.append((shape, "out of memory"))
            finally:
                batch = None  # free the caches before the next shape
                if device == "cuda":
                    torch.cuda.empty_cache()
        bar.close()
    if not timings:
        raise UserError(f"no shape was measured (budget {budget_s} s, {len(skipped)} out of memory); nothing written")
    write_profile(out, spec.name, (t.columns for t in timings))
    return ProfileResult(
        timings,
        skipped,
        left,
        setup_s,
        time.perf_counter() - t_start,
        "sdpa enable_gqa" if gqa_native else "sdpa, K/V repeated per query head",
    )
