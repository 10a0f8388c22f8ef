"""Plan a deployment: the cheapest configuration (model, GPU type, tensor parallelism, replicas, policy, router,
token budget, max_num_seqs) whose simulated runs meet an SLO at a target rate, and the cost-versus-capacity
frontier around it. docs/plan.md describes the search; in short:

1. Theory: each configuration's stability bound (replicas x the bound of one replica within its token budget,
   `studies/bounds.py`). A configuration whose bound is below the target cannot meet it and is never simulated.
2. The cheapest that meets the target: configurations by cost per hour, each run once at the target rate, a short
   run first (a short run that fails decides: a longer one only lets the queue grow further); at the first cost at
   which one passes, the others at that cost are run as well.
3. Their capacities (`studies/capacity.py`'s search, bracketed by the target below and the bound above): the answer
   is the one with the most headroom, its margin capacity / target - 1.
4. The frontier: configurations by cost up to `frontier_cost` x the answer's. One whose bound is at most a capacity
   found at no higher cost cannot be on the frontier and is not run; the others are first run just above the most
   capacity found at no higher cost (at `UNUSABLE` x their bound while none is found; a short run first), and only
   those that pass there are searched, from there or from the capacity of the same configuration with fewer
   replicas (more replicas never hold less).

The runs made and every verdict depend only on the runs' results, never on the number of workers: the walks take
`lookahead` candidates at a time (a fixed number, however many workers run them), a result that the walk one at a
time would not have made is dropped from the plan, and capacity searches decide on rates independently of the workers
(`studies/capacity.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from tqdm import tqdm

from llmsched.errors import UserError
from llmsched.integrations.ray_serve.replica import SERVE_POLICIES
from llmsched.perf.catalog import GPUS, PRICES, Price, get_gpu, get_model, kv_blocks
from llmsched.policies import POLICIES, needs_perf, policy_defaults
from llmsched.routers import ROUTERS
from llmsched.studies.bounds import spec_bound
from llmsched.studies.capacity import Point, evaluate_screened, search
from llmsched.studies.executor import Executor
from llmsched.studies.slo import SLO
from llmsched.studies.spec import MAX_TP, RunSpec, perf_provenance, validate

NO_ROUTER = "-"  # a single replica has nothing to route
LOOKAHEAD = 2  # candidates a walk runs at once: fixed, so that the plan does not depend on the worker count
UNUSABLE = 0.05  # a configuration that fails its SLO at this share of its stability bound is not searched further


@dataclass(frozen=True)
class Config:
    model: str
    gpu: str
    tp: int
    replicas: int
    policy: str
    router: str
    token_budget: int
    max_num_seqs: int

    @property
    def gpus(self) -> int:
        return self.replicas * self.tp

    @property
    def group(self) -> tuple:
        """Everything but the replica count: configurations of one group differ only in how many replicas."""
        return (self.model, self.gpu, self.tp, self.policy, self.router, self.token_budget, self.max_num_seqs)

    def __str__(self) -> str:
        shape = f"{self.replicas} x {self.tp} {self.gpu}" if self.tp > 1 else f"{self.replicas} {self.gpu}"
        router = f", {self.router}" if self.router != NO_ROUTER else ""
        return f"{self.model} on {shape}, {self.policy}{router}, budget {self.token_budget}, seqs {self.max_num_seqs}"

    def spec(self, base: RunSpec) -> RunSpec:
        return replace(
            base,
            policy=self.policy,
            model=self.model,
            gpu=self.gpu,
            tensor_parallel=self.tp,
            replicas=f"{self.gpu}:{self.replicas}" if self.replicas > 1 else None,
            router=self.router if self.router != NO_ROUTER else base.router,
            token_budget=self.token_budget,
            max_num_seqs=self.max_num_seqs,
        )


@dataclass(frozen=True)
class Space:
    models: tuple[str, ...]
    gpus: tuple[tuple[str, Price], ...]  # GPU name and its price per GPU-hour
    tps: tuple[int, ...] = (1, 2, 4, 8)
    max_gpus: int = 16
    policies: tuple[str, ...] = ("sarathi", "slai")
    routers: tuple[str, ...] = ("round-robin", "jsq", "least-work")
    token_budgets: tuple[int, ...] | None = None  # None: each policy's default
    max_num_seqs: tuple[int, ...] | None = None

    def price(self, gpu: str) -> float:
        return dict(self.gpus)[gpu].usd_per_hour


def parse_gpus(text: str) -> tuple[tuple[str, Price], ...]:
    """'h100-80gb:2.49,a100-80gb' -> each GPU with its price per GPU-hour (the catalog's where none is given)."""
    out: dict[str, Price] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, price_text = part.partition(":")
        name = name.strip()
        if name not in GPUS:
            raise UserError(f"--gpus: {name!r} is not a GPU; expected NAME[:USD_PER_GPU_HOUR],... with NAME one of "
                            f"{', '.join(GPUS)}")  # fmt: skip
        if name in out:
            raise UserError(f"--gpus names {name} twice")
        if not sep:
            if name not in PRICES:
                raise UserError(f"--gpus: {name} has no catalog price; give one, e.g. {name}:2.0")
            out[name] = PRICES[name]
            continue
        try:
            price = float(price_text)
        except ValueError:
            price = float("nan")
        if not (math.isfinite(price) and price > 0):
            raise UserError(f"--gpus: price of {name} is {price_text!r}, expected a positive USD per GPU-hour")
        out[name] = Price(price, "given with --gpus", "", "")
    return tuple(out.items())


def check_space(space: Space) -> None:
    for name in space.models:
        get_model(name)
    for gpu, price in space.gpus:
        get_gpu(gpu)
        if not price.usd_per_hour > 0:
            raise UserError(f"price of {gpu} is {price.usd_per_hour}, expected positive")
    if not space.gpus:
        raise UserError("--gpus is empty")
    if space.max_gpus < 1:
        raise UserError(f"--max-gpus is {space.max_gpus}, expected at least 1")
    for tp in space.tps:
        if not 1 <= tp <= MAX_TP:
            raise UserError(f"--tp: {tp} is out of range, expected 1 to {MAX_TP}")
    for p in space.policies:
        if p not in POLICIES:
            raise UserError(f"--policies: {p!r} is not one of {', '.join(POLICIES)}")
    for r in space.routers:
        if r not in ROUTERS:
            raise UserError(f"--routers: {r!r} is not one of {', '.join(ROUTERS)}")


@dataclass(frozen=True)
class Skipped:
    what: str  # model on tp x gpu
    reason: str


def configurations(space: Space) -> tuple[list[Config], list[Skipped]]:
    """Every configuration of the space that vLLM could run, in a fixed order; and the (model, GPU, TP) shapes left
    out, with why (the model does not fit, or its heads do not split)."""
    check_space(space)
    out, skipped = [], []
    for model in space.models:
        m = get_model(model)
        for gpu, _ in space.gpus:
            for tp in space.tps:
                why = m.check_tp(tp)
                if why is None and tp > space.max_gpus:
                    why = f"needs {tp} GPUs, more than --max-gpus {space.max_gpus}"
                if why is None:
                    try:
                        kv_blocks(m, get_gpu(gpu), tp=tp)
                    except UserError as e:
                        why = str(e)
                if why is not None:
                    skipped.append(Skipped(f"{model} on {tp} x {gpu}", why))
                    continue
                for policy in space.policies:
                    d = policy_defaults(policy)
                    for budget in space.token_budgets or (d["token_budget"],):
                        for seqs in space.max_num_seqs or (d["max_num_seqs"],):
                            for n in range(1, space.max_gpus // tp + 1):
                                for router in space.routers if n > 1 else (NO_ROUTER,):
                                    out.append(Config(model, gpu, tp, n, policy, router, budget, seqs))
    return out, skipped


@lru_cache(maxsize=256)
def replica_bound(base: RunSpec, model: str, gpu: str, tp: int, budget: int, seqs: int) -> float:
    """The stability bound of one replica within a token budget (requests/s)."""
    spec = replace(base, model=model, gpu=gpu, tensor_parallel=tp, replicas=None, token_budget=budget,
                   max_num_seqs=seqs)  # fmt: skip
    return spec_bound(spec, (budget,)).fixed_qps(budget)


@dataclass
class Evaluated:
    """What the plan learnt of one configuration."""

    config: Config
    cost: float  # USD per hour
    bound: float  # the theory's stability bound (requests/s)
    batch_times: str  # "measured" or "estimated"
    at_target: Point | None = None  # the run at the target rate (the full one, or the short one that failed)
    capacity: float | None = None  # the highest rate found to meet the SLO
    capacity_points: tuple[Point, ...] = ()  # the runs its capacity search decided on
    screen: Point | None = None  # the frontier's screen: the run just above a capacity found at no higher cost
    skipped: str = ""  # why it was not simulated

    @property
    def meets(self) -> bool | None:
        return None if self.at_target is None else self.at_target.passed

    @property
    def short(self) -> bool:
        """The verdict at the target is the short run's."""
        return self.at_target is not None and self.at_target.short

    @property
    def simulated(self) -> bool:
        return self.at_target is not None or self.screen is not None or self.capacity is not None

    @property
    def capacity_runs(self) -> int:
        return len(self.capacity_points)

    @property
    def undecided(self) -> list[Point]:
        """The runs whose verdict rested on a stability test too short to decide."""
        runs = [*self.capacity_points, *(p for p in (self.at_target, self.screen) if p is not None)]
        return sorted((p for p in runs if p.stability_needs is not None), key=lambda p: p.qps)


@dataclass
class ModelPlan:
    """The plan of one model: models are not compared with each other (each answers for itself)."""

    model: str
    target_qps: float
    configs: list[Evaluated]  # in cost order
    answer: Evaluated | None  # the cheapest configuration that meets the target (the most headroom among equals)
    closest: Evaluated | None  # with no answer: the configuration that came closest
    frontier: list[Evaluated]

    @property
    def simulated(self) -> int:
        return sum(e.simulated for e in self.configs)

    @property
    def left_out_by_bound(self) -> int:
        """Configurations not simulated because their stability bound is below the target."""
        return sum(e.skipped.startswith("bound") and "target" in e.skipped for e in self.configs)

    @property
    def margin(self) -> float | None:
        if self.answer is None or self.answer.capacity is None:
            return None
        return self.answer.capacity / self.target_qps - 1


@dataclass
class Plan:
    target_qps: float
    slo: str
    models: list[ModelPlan]
    shapes_skipped: list[Skipped]
    runs: int
    settings: dict = field(default_factory=dict)

    @property
    def configs(self) -> list[Evaluated]:
        return [e for m in self.models for e in m.configs]


def make_plan(
    space: Space,
    base: RunSpec,
    target_qps: float,
    slo: SLO,
    executor: Executor,
    short_requests: int | None = None,
    granularity: float = 0.05,
    frontier_cost: float = 2.0,
    prune: bool = True,
    progress: bool = True,
    lookahead: int = LOOKAHEAD,
) -> Plan:
    """The plan (see the module docstring). `prune=False` simulates every configuration at the target and searches
    every capacity (a brute force to check the pruned search against)."""
    if not target_qps > 0:
        raise UserError(f"--qps is {target_qps}, expected a positive target rate")
    if not frontier_cost >= 1:
        raise UserError(f"--frontier-cost is {frontier_cost}, expected at least 1")
    configs, skipped = configurations(space)
    if not configs:
        raise UserError("no configuration of the space fits: " + "; ".join(f"{s.what}: {s.reason}" for s in skipped))
    validate(configs[0].spec(base))
    if lookahead < 1:
        raise UserError(f"lookahead is {lookahead}, expected at least 1")
    walk = _Walk(base, target_qps, slo, executor, short_requests if prune else None, granularity, progress, lookahead)
    models = []
    for model in space.models:
        ev = []
        for c in (c for c in configs if c.model == model):
            unit = replica_bound(base, c.model, c.gpu, c.tp, c.token_budget, c.max_num_seqs)
            kind, _ = perf_provenance(replace(c.spec(base), replicas=None))
            ev.append(Evaluated(c, c.gpus * space.price(c.gpu), c.replicas * unit, kind))
        if ev:
            ev.sort(key=lambda e: (e.cost, -e.bound, _key(e.config)))
            models.append(_plan_model(walk, model, ev, target_qps, frontier_cost, prune))
    return Plan(target_qps, str(slo), models, skipped, walk.runs)


def _plan_model(walk: _Walk, model: str, ev: list[Evaluated], target: float, frontier_cost: float,
                prune: bool) -> ModelPlan:  # fmt: skip
    if prune:
        for e in ev:
            if e.bound < target:
                e.skipped = f"bound {e.bound:.3g} QPS < target"
        at_target = _cheapest(walk, [e for e in ev if not e.skipped])
        walk.capacities(at_target, lo=target)
    else:  # the brute force: every configuration at the target and every capacity, from the target if it passed
        walk.at_target(ev)
        walk.capacities(ev, lo=lambda e: target if e.meets else 0.0, theory=False)
        passing = [e for e in ev if e.meets]
        at_target = [e for e in passing if e.cost == passing[0].cost] if passing else []
    answer = max(at_target, key=lambda e: e.capacity or 0.0, default=None)  # first of the best: order breaks ties
    top = (at_target[0].cost if at_target and prune else max(e.cost for e in ev)) * frontier_cost
    frontier = _frontier(walk, [e for e in ev if e.cost <= top], prune)
    # With none meeting the target, the frontier spans the whole space: its last point holds the most
    closest = frontier[-1] if answer is None and frontier else None
    return ModelPlan(model, target, ev, answer, closest, frontier)


def _fewer(x: Config, c: Config) -> bool:
    """`x` is `c` with fewer replicas (one replica, routed by nothing, is below every router's pair)."""
    same = x.group[:4] + x.group[5:] == c.group[:4] + c.group[5:]
    return same and x.replicas < c.replicas and (x.router == c.router or x.replicas == 1)


def _key(c: Config) -> tuple:
    return (c.model, c.gpu, c.tp, c.replicas, c.policy, c.router, c.token_budget, c.max_num_seqs)


class _Walk:
    """Runs configurations on the executor: at the target (short run first) and capacity searches."""

    def __init__(self, base: RunSpec, target: float, slo: SLO, executor: Executor, short: int | None,
                 granularity: float, progress: bool, width: int) -> None:  # fmt: skip
        self.base, self.target, self.slo, self.executor = base, target, slo, executor
        self.short, self.granularity, self.progress, self.width = short, granularity, progress, width
        self.runs = 0

    def at_target(self, batch: list[Evaluated]) -> None:
        """Run each at the target rate (`at_rates`)."""
        for e, p in zip(batch, self.at_rates(batch, [self.target] * len(batch)), strict=True):
            e.at_target = p

    def at_rates(self, batch: list[Evaluated], rates: list[float]) -> list[Point]:
        """Run each at its rate, screened by a short run (`capacity.evaluate_screened`)."""
        specs = [e.config.spec(self.base).at_qps(q) for e, q in zip(batch, rates, strict=True)]
        return self._map([(spec, self.slo, self.short) for spec in specs])

    def capacities(self, batch: list[Evaluated], lo: float | Callable[[Evaluated], float], theory: bool = True) -> None:
        """Search each one's capacity between `lo` (a rate known to pass, or 0) and its stability bound, which no
        rate above can meet, so it is not run (without `theory`, the brute force's check of the theory, it is run
        and a search that passes there goes on up); each run screened by a short one."""
        if not batch:
            return
        los = [lo(e) if callable(lo) else lo for e in batch]
        specs = [e.config.spec(self.base) for e in batch]
        brackets = [
            (low, max(e.bound, low) if theory else max(e.bound, low * 1.05, 1e-3))
            for e, low in zip(batch, los, strict=True)
        ]
        searches = search(specs, self.slo, self.executor, brackets=brackets, tops_fail=theory, screen=self.short,
                          granularity=self.granularity, progress=self.progress)  # fmt: skip
        for e, s, low in zip(batch, searches, los, strict=True):
            e.capacity = max(s.capacity, low)
            e.capacity_points = tuple(s.points)
            self.runs += len(s.points)

    def _map(self, jobs: list[tuple]) -> list[Point]:
        if not jobs:
            return []
        self.runs += len(jobs)
        with tqdm(total=len(jobs), desc="plan runs", unit="run", disable=not self.progress, leave=False) as bar:
            return self.executor.map(evaluate_screened, jobs, bar)


def _cheapest(walk: _Walk, candidates: list[Evaluated]) -> list[Evaluated]:
    """Every candidate at the lowest cost at which one meets the target (in order), after running, in cost order,
    the candidates up to that cost; [] if none meets it."""
    i, width = 0, walk.width
    found: float | None = None
    while i < len(candidates):
        if found is not None and candidates[i].cost > found:
            break
        batch = candidates[i : i + width]
        walk.at_target(batch)
        for e in batch:
            if found is not None and e.cost > found:
                e.at_target = None  # run ahead of a sequential walk: not part of the plan
                continue
            if e.meets:
                found = e.cost if found is None else found
        i += len(batch)
    if found is None:
        return []
    return [e for e in candidates if e.cost == found and e.meets]


def _frontier(walk: _Walk, ev: list[Evaluated], prune: bool) -> list[Evaluated]:
    """Search the capacities that can be on the frontier (in cost order) and return the Pareto frontier: each
    configuration of the searched ones that no cheaper-or-equal one matches in capacity."""
    width = walk.width
    done = [e for e in ev if e.capacity is not None]

    def seen(e: Evaluated) -> float:
        """The highest capacity found at no higher cost than `e`."""
        return max((x.capacity or 0.0 for x in done if x.cost <= e.cost), default=0.0)

    def floor(e: Evaluated) -> float:
        """The capacity found for the same configuration with fewer replicas: more never hold less."""
        return max((x.capacity or 0.0 for x in done if _fewer(x.config, e.config)), default=0.0)

    pending = [e for e in ev if e.capacity is None]
    i = 0
    while i < len(pending):
        batch: list[Evaluated] = []
        j = i
        while j < len(pending) and len(batch) < width:
            if not prune or pending[j].bound > seen(pending[j]):
                batch.append(pending[j])
            j += 1
        # The screen: one run just above the most capacity found at no higher cost (with none found yet, at
        # UNUSABLE x its bound). A configuration that fails it cannot be on the frontier, so its capacity is not
        # searched: one run, often a short one, instead of a search's four to twelve.
        screened = [e for e in batch if prune]
        rates = [_just_above(seen(e)) if seen(e) > 0 else round(e.bound * UNUSABLE, 4) for e in screened]
        for e, p in zip(screened, walk.at_rates(screened, rates), strict=True):
            e.screen = p
        to_search = [e for e in batch if e.screen is None or e.screen.passed]
        walk.capacities(to_search, lo=lambda e: max(floor(e), e.screen.qps if e.screen is not None else 0.0))
        for e in pending[i:j]:  # in order: a run made ahead that a sequential walk would not make is dropped
            if prune and e.bound <= seen(e):
                e.capacity, e.capacity_points, e.screen = None, (), None
                e.skipped = e.skipped or f"bound {e.bound:.3g} QPS <= a capacity found at no higher cost"
                continue
            if e.screen is not None and not e.screen.passed:
                why = "just above a capacity found at no higher cost" if seen(e) > 0 else f"{UNUSABLE:.0%} of its bound"
                e.skipped = e.skipped or f"fails at {e.screen.qps:g} QPS, {why}"
                continue
            done.append(e)
        i = j
    searched = sorted(done, key=lambda e: (e.cost, -(e.capacity or 0.0), _key(e.config)))
    frontier, top = [], 0.0
    for e in searched:
        if (e.capacity or 0.0) > top:
            frontier.append(e)
            top = e.capacity or 0.0
    return frontier


def _just_above(qps: float) -> float:
    """The lowest rate of the searches' 4-decimal grid above `qps`."""
    return math.floor(qps * 1e4 + 1) / 1e4


def deploy_commands(c: Config, hf_repo: str) -> list[str]:
    """The command lines that deploy a configuration: `vllm serve` for each replica, llmsched's policy as vLLM's
    scheduler class (`integrations/vllm`); and, for one GPU per replica and a policy it serves, `llmsched serve`
    (the replicas behind llmsched's router on Ray Serve)."""
    scheduler = {"slai": "SLAIScheduler", "sarathi": "SarathiScheduler", "sarathi-spf": "SPFScheduler"}
    cls = scheduler.get(c.policy, "PolicyScheduler")
    extra = "" if c.policy in scheduler else f' --additional-config \'{{"llmsched": {{"policy": "{c.policy}"}}}}\''
    vllm = (
        f"vllm serve {hf_repo} --tensor-parallel-size {c.tp} --max-num-batched-tokens {c.token_budget} "
        f"--max-num-seqs {c.max_num_seqs} --scheduler-cls llmsched.integrations.vllm.{cls}{extra}"
    )
    each = "replica" if c.replicas == 1 else f"each of {c.replicas} replicas"
    lines = [f"{vllm}    # {each}, {c.tp} GPU{'s' if c.tp > 1 else ''}"]
    if c.replicas > 1:
        lines.append(f"# route with llmsched's {c.router} router (llmsched.routers) in front of the replicas")
    if c.tp == 1 and c.policy in SERVE_POLICIES:
        router = c.router if c.router != NO_ROUTER else "round-robin"
        perf = " --perf-model PROFILE.csv" if needs_perf(c.policy) else ""
        lines.append(
            f"llmsched serve --model DIR --replicas {c.replicas} --router {router} --policy {c.policy}{perf} "
            f"--token-budget {c.token_budget} --max-num-seqs {c.max_num_seqs}"
        )
    return lines


def estimated_share(configs: Sequence[Evaluated]) -> float:
    return sum(e.batch_times == "estimated" for e in configs) / max(1, len(configs))
