"""Figures for the theory: throughput curve with the optimal tile, the stability region (bound vs the
capacity each policy achieved) and the number of requests in the system over time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def throughput_curve(path: Path, tokens: Sequence[float], tokens_per_s: Sequence[float], tile: int, cap: float) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(tokens, tokens_per_s, color="C0", label="b / t(b), steady-state mix")
    ax.axvline(cap, color="C3", ls=":", label=f"KV memory cap ({cap:.0f})")
    ax.axvline(tile, color="C2", ls="--", label=f"optimal tile b* = {tile}")
    ax.set_xlabel("tokens per batch b")
    ax.set_ylabel("tokens/s")
    ax.legend(fontsize=8)
    _save(fig, path)


def stability_region(
    path: Path, title: str, bound_qps: float, achieved: dict[str, float], fixed: dict[str, float] | None = None
) -> None:
    """Bars: the highest stable QPS found per policy; lines: the bound and fixed-budget bounds."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    names = list(achieved)
    bars = ax.bar(names, [achieved[n] for n in names], color="C0", label="achieved (stable)")
    for bar, n in zip(bars, names, strict=True):
        ax.annotate(
            f"{achieved[n] / bound_qps:.2f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(bound_qps, color="C3", label=f"stability bound {bound_qps:.2f}")
    for i, (k, v) in enumerate((fixed or {}).items()):
        ax.axhline(v, color=f"C{4 + i}", ls="--", label=f"bound at fixed budget {k}: {v:.2f}")
    ax.set_ylabel("requests/s")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(fontsize=7, loc="lower left")
    _save(fig, path)


def queue_over_time(path: Path, title: str, series: dict[str, tuple[Sequence[float], Sequence[int]]]) -> None:
    """series: label -> (batch start times, requests in the system after each batch)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for label, (t, n) in series.items():
        ax.plot(t, n, lw=0.8, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests in system")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, path)
