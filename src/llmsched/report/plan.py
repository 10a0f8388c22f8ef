"""A plan's outputs: text for the terminal, JSON, CSV tables, the frontier plot and one HTML report. Every figure
says whether its batch times are measured or estimated (docs/plan.md)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from llmsched.perf.catalog import HF_REPOS
from llmsched.report.files import write_csv
from llmsched.report.html import table_html, write_html
from llmsched.studies.plan import Evaluated, ModelPlan, Plan, Space, deploy_commands


def config_row(e: Evaluated) -> dict:
    c = e.config
    return {
        "model": c.model,
        "gpu": c.gpu,
        "tensor_parallel_size": c.tp,
        "replicas": c.replicas,
        "gpus": c.gpus,
        "policy": c.policy,
        "router": c.router,
        "token_budget": c.token_budget,
        "max_num_seqs": c.max_num_seqs,
        "cost_per_hour": round(e.cost, 4),
        "bound_qps": round(e.bound, 4),
        "batch_times": e.batch_times,
        "meets_target": e.meets,
        "target_run": None if e.at_target is None else ("short" if e.short else "full"),
        "target_reason": None if e.at_target is None or e.meets else e.at_target.reason,
        "screen_qps": None if e.screen is None else e.screen.qps,
        "screen_passed": None if e.screen is None else e.screen.passed,
        "capacity_qps": e.capacity,
        "capacity_runs": e.capacity_runs,
        "stability_undecided_qps": [p.qps for p in e.undecided],
        "skipped": e.skipped,
    }


def _deploy(e: Evaluated) -> list[str]:
    return deploy_commands(e.config, HF_REPOS.get(e.config.model, e.config.model))


def model_json(m: ModelPlan) -> dict:
    out: dict = {
        "answer": None,
        "closest_miss": None,
        "frontier": [config_row(e) for e in m.frontier],
        "configurations": len(m.configs),
        "simulated": m.simulated,
        "left_out_by_bound": m.left_out_by_bound,
    }
    if m.answer is not None:
        out["answer"] = {**config_row(m.answer), "label": str(m.answer.config), "margin": m.margin,
                         "deploy": _deploy(m.answer)}  # fmt: skip
    elif m.closest is not None:
        c = m.closest
        out["closest_miss"] = {**config_row(c), "label": str(c.config), "of_target": (c.capacity or 0.0) / m.target_qps}
    return out


def plan_json(plan: Plan, space: Space) -> dict:
    return {
        "target_qps": plan.target_qps,
        "slo": plan.slo,
        "models": {m.model: model_json(m) for m in plan.models},
        "runs": plan.runs,
        "stability_undecided": [str(e.config) for e in plan.configs if e.undecided],
        "shapes_left_out": [{"shape": s.what, "reason": s.reason} for s in plan.shapes_skipped],
        "prices": {gpu: str(price) for gpu, price in space.gpus},
        "settings": plan.settings,
    }


def _line(e: Evaluated) -> str:
    cap = "-" if e.capacity is None else f"{e.capacity:.3g}"
    return f"    ${e.cost:7.2f}/h  capacity {cap:>6} QPS  bound {e.bound:6.3g}  [{e.batch_times}]  {e.config}"


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def model_text(m: ModelPlan) -> list[str]:
    lines = [f"{m.model}:"]
    if m.answer is not None:
        a = m.answer
        lines += [
            f"  cheapest: {a.config}",
            f"    ${a.cost:.2f} per hour ({_gpus(a.config.gpus)}); capacity {a.capacity:.3g} QPS, margin "
            f"{100 * (m.margin or 0):.0f}% over the target; batch times {a.batch_times}",
            "  deploy:",
            *(f"    {line}" for line in _deploy(a)),
        ]
    else:
        lines.append(f"  no configuration meets {m.target_qps:g} QPS")
        if m.closest is not None:
            c, share = m.closest, 100 * (m.closest.capacity or 0.0) / m.target_qps
            lines.append(
                f"  closest: {c.config}: capacity {c.capacity or 0:.3g} QPS ({share:.0f}% of the target), "
                f"${c.cost:.2f} per hour; batch times {c.batch_times}"
            )
    lines.append("  frontier (cost per hour against capacity):")
    lines += [_line(e) for e in m.frontier]
    lines.append(
        f"  {len(m.configs)} configurations: {m.simulated} simulated, {m.left_out_by_bound} left out by a stability "
        "bound below the target, the rest by cost or by a capacity found at no higher cost"
    )
    return lines


def undecided_warning(plan: Plan) -> str | None:
    """Says how many configurations' verdicts rested on runs too short for the stability test to decide."""
    configs = [e for e in plan.configs if e.undecided]
    if not configs:
        return None
    need = max(p.stability_needs or 0 for e in configs for p in e.undecided)
    return (
        f"warning: {len(configs)} configurations had a verdict resting on a run too short for the stability test to "
        f"decide (its queue fluctuates more than the growth it must detect); about {need:,} requests per run would "
        "decide (--num-requests)"
    )


def plan_text(plan: Plan, space: Space) -> str:
    lines = [f"target {plan.target_qps:g} QPS under SLO {plan.slo}"]
    for m in plan.models:
        lines += model_text(m)
    undecided = undecided_warning(plan)
    if undecided:
        lines.append(undecided)
    lines.append(f"{plan.runs} simulated runs")
    lines.append("prices: " + "; ".join(f"{g} {p}" for g, p in space.gpus))
    return "\n".join(lines)


def plot_frontier(plan: Plan, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(plan.models), figsize=(7 * len(plan.models), 5), squeeze=False)
    for ax, m in zip(axes[0], plan.models, strict=True):
        searched = [e for e in m.configs if e.capacity is not None]
        for kind, marker in (("measured", "o"), ("estimated", "x")):
            pts = [e for e in searched if e.batch_times == kind]
            if pts:
                ax.scatter([e.cost for e in pts], [e.capacity for e in pts], marker=marker, alpha=0.5,
                           label=f"searched ({kind} batch times)")  # fmt: skip
        if m.frontier:
            ax.step([e.cost for e in m.frontier], [e.capacity for e in m.frontier], where="post", color="k",
                    label="frontier")  # fmt: skip
        ax.axhline(plan.target_qps, color="tab:red", ls="--", label=f"target {plan.target_qps:g} QPS")
        if m.answer is not None:
            ax.scatter([m.answer.cost], [m.answer.capacity], s=160, facecolors="none", edgecolors="tab:red",
                       label="cheapest meeting the target")  # fmt: skip
        ax.set(xlabel="USD per hour", ylabel="capacity (QPS)", title=f"{m.model}, SLO {plan.slo}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plan(out: Path, plan: Plan, space: Space) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "plan.json.tmp"
    tmp.write_text(json.dumps(plan_json(plan, space), indent=2, sort_keys=True) + "\n")
    tmp.replace(out / "plan.json")
    write_csv([config_row(e) for e in plan.configs], out / "configurations.csv")
    write_csv([config_row(e) for m in plan.models for e in m.frontier], out / "frontier.csv")
    png = plot_frontier(plan, out / "frontier.png")
    header = ["cost/h", "capacity", "bound", "batch times", "configuration"]
    sections = [("Answer", f"<pre>{html.escape(plan_text(plan, space))}</pre>")]
    for m in plan.models:
        ran = [e for e in m.configs if e.at_target is not None]
        sections.append(
            (
                f"{m.model}: frontier",
                table_html(
                    header, [[round(e.cost, 2), e.capacity, e.bound, e.batch_times, str(e.config)] for e in m.frontier]
                ),
            )  # fmt: skip
        )
        sections.append(
            (
                f"{m.model}: runs at the target",
                table_html(
                    ["cost/h", "meets", "run", "why not", "bound", "batch times", "configuration"],
                    [
                        [
                            round(e.cost, 2),
                            e.meets,
                            "short" if e.short else "full",
                            "" if e.meets or e.at_target is None else e.at_target.reason,
                            e.bound,
                            e.batch_times,
                            str(e.config),
                        ]
                        for e in ran
                    ],  # fmt: skip
                ),
            )
        )
    sections += [
        ("Left out", table_html(["shape", "why"], [[s.what, s.reason] for s in plan.shapes_skipped])),
        ("Prices", table_html(["GPU", "price"], [[g, str(p)] for g, p in space.gpus])),
    ]
    write_html(out / "report.html", "llmsched plan", sections, [png])
