"""Plots (PNG, matplotlib) and one self-contained HTML report (PNGs inlined as base64)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from llmsched.metrics import Detail  # noqa: E402
from llmsched.metrics.distributions import QUANTILES


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series(rows: list[dict], key: str) -> dict[str, tuple[list[float], list[float | None]]]:
    out: dict[str, tuple[list[float], list[float | None]]] = {}
    for r in sorted(rows, key=lambda r: (r["policy"], r["qps"])):
        xs, ys = out.setdefault(r["policy"], ([], []))
        xs.append(r["qps"])
        ys.append(r.get(key))
    return out


def _tiers(rows: list[dict]) -> list[str]:
    return sorted({k.split(".")[0] for r in rows for k in r if "." in k})


def plot_vs_qps(rows: list[dict], out: Path) -> list[Path]:
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "median_ttft_ms", "median TTFT"), (axes[1], "p99_ttft_ms", "p99 TTFT")):
        for policy, (xs, ys) in _series(rows, key).items():
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=policy)
        ax.set(xlabel="QPS", ylabel="ms", title=title, yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    paths.append(_save(fig, out / "ttft_vs_qps.png"))
    tiers = _tiers(rows) or [""]
    fig, axes = plt.subplots(1, len(tiers), figsize=(5.5 * len(tiers), 4), squeeze=False)
    for ax, tier in zip(axes[0], tiers, strict=True):
        prefix = f"{tier}." if tier else ""
        for policy, (xs, ys) in _series(rows, f"{prefix}p99_itl_ms").items():
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=policy)
        slo = next((r.get(f"{prefix}tbt_slo_ms") or r.get("tbt_slo_ms") for r in rows), None)
        if slo:
            ax.axhline(slo, color="k", ls="--", lw=1, label="TBT SLO")
        ax.set(xlabel="QPS", ylabel="ms", title=f"p99 TBT {tier or 'all requests'}")
        ax.grid(alpha=0.3)
        ax.legend()
    paths.append(_save(fig, out / "tbt_vs_qps.png"))
    fig, axes = plt.subplots(1, len(tiers), figsize=(5.5 * len(tiers), 4), squeeze=False)
    for ax, tier in zip(axes[0], tiers, strict=True):
        prefix = f"{tier}." if tier else ""
        for policy, (xs, ys) in _series(rows, f"{prefix}slo_attainment").items():
            ax.plot(xs, [y if y is not None else float("nan") for y in ys], marker="o", label=policy)
        ax.set(
            xlabel="QPS", ylabel="fraction of completed requests", title=f"SLO attainment {tier or ''}", ylim=(0, 1.05)
        )
        ax.grid(alpha=0.3)
        ax.legend()
    paths.append(_save(fig, out / "slo_attainment.png"))
    return paths


def plot_details(details: list[Detail], out: Path) -> list[Path]:
    if not details:
        return []
    qps = details[0].qps
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    for i, d in enumerate(details):
        color = f"C{i}"
        if d.ttft_quantiles_ms.get("all"):
            axes[0].plot(d.ttft_quantiles_ms["all"], QUANTILES, color=color, label=d.policy)
        groups = [g for g in d.itl_quantiles_ms if g != "all"] or ["all"]  # TBT SLOs are per tier
        for style, group in zip(styles * 4, groups, strict=False):
            if d.itl_quantiles_ms[group]:
                label = d.policy + ("" if group == "all" else f" ({group})")
                axes[1].plot(d.itl_quantiles_ms[group], QUANTILES, color=color, ls=style, label=label)
    axes[0].set(xlabel="TTFT (ms)", ylabel="CDF", title=f"TTFT at {qps:g} QPS", xscale="log")
    axes[1].set(xlabel="TBT (ms)", ylabel="CDF", title=f"time between tokens at {qps:g} QPS", xscale="log")
    for ax in axes:
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    paths.append(_save(fig, out / "cdf.png"))
    fig, ax = plt.subplots(figsize=(8, 4))
    for d in details:
        xs = [s + 256 for s, m in zip(d.bucket_starts, d.bucket_mean_ttft_ms, strict=True) if m is not None]
        ys = [m for m in d.bucket_mean_ttft_ms if m is not None]
        ax.plot(xs, ys, marker="o", label=d.policy)
    ax.set(
        xlabel="prompt length (tokens, 512-token buckets)",
        ylabel="mean TTFT (ms)",
        yscale="log",
        title=f"mean TTFT by prompt length at {qps:g} QPS (completed requests)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, out / "ttft_by_prompt_length.png"))
    return paths
