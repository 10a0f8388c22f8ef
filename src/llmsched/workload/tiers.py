"""SLO tiers from a spec such as "paying:0.05:tbt=0.1,free:0.95:tbt=0.5"."""

from __future__ import annotations

from dataclasses import dataclass

from llmsched.errors import UserError

PAPER_TIERS = "paying:0.05:tbt=0.1,free:0.95:tbt=0.5"
DEFAULT_TBT = 0.2  # the reference code's fallback TBT when a request has none


@dataclass(frozen=True)
class SLOTier:
    name: str
    share: float
    tbt: float  # seconds
    ttft: float | None = None  # optional per-tier TTFT SLO (seconds), used by goodput
    priority: int = 0  # rank in the spec: the first tier is served first by tier-aware policies


def parse_tiers(spec: str | None) -> list[SLOTier]:
    """Parse `name:share:tbt=S[:ttft=S],...`, or `paper` for the paper's tiers (`PAPER_TIERS`). Shares must be
    positive and sum to 1 (within 1e-6)."""
    if not spec:
        return [SLOTier("default", 1.0, DEFAULT_TBT)]
    if spec.strip() == "paper":
        spec = PAPER_TIERS
    tiers: list[SLOTier] = []
    for rank, part in enumerate(p.strip() for p in spec.split(",")):
        fields = part.split(":")
        if len(fields) < 3:
            raise UserError(f"--tiers: {part!r} should look like name:share:tbt=SECONDS")
        name, share_s, *opts = fields
        if not name or name in {t.name for t in tiers}:
            raise UserError(f"--tiers: tier name {name!r} is empty or repeated")
        share = _number(share_s, f"--tiers: share of {name!r}")
        kv: dict[str, float] = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or key not in ("tbt", "ttft"):
                raise UserError(f"--tiers: {opt!r} in tier {name!r} should be tbt=SECONDS or ttft=SECONDS")
            kv[key] = _number(value, f"--tiers: {key} of {name!r}")
        if "tbt" not in kv:
            raise UserError(f"--tiers: tier {name!r} has no tbt=SECONDS")
        if share <= 0 or kv["tbt"] <= 0 or kv.get("ttft", 1.0) <= 0:
            raise UserError(f"--tiers: share and times of {name!r} must be positive")
        tiers.append(SLOTier(name, share, kv["tbt"], kv.get("ttft"), rank))
    total = sum(t.share for t in tiers)
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"--tiers: shares sum to {total:g}, expected 1")
    return tiers


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{what} is {text!r}, expected a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"{what} is {text!r}, expected a finite number")
    return value
