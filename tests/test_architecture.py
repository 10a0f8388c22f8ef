"""The package's import graph reads one way: workload -> policies -> engine -> metrics -> studies -> report ->
commands. Every import (module level or inside a function) goes to the same floor or one below, and no two modules
import each other, directly or in a circle."""

import ast
from pathlib import Path

import llmsched

ROOT = Path(llmsched.__file__).parent

# Floor of each top-level part of the package: a module may import only from its own floor or lower ones.
FLOORS = {
    "errors": 0,
    "workload": 1,
    "perf": 1,
    "policies": 2,
    "routers": 2,
    "records": 2,
    "theory": 2,
    "sim": 3,
    "metrics": 4,
    "integrations": 5,
    "studies": 5,
    "report": 6,
    "commands": 7,
    "cli": 8,
    "__init__": 9,
    "api": 9,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("llmsched", *parts))
        out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """Modules of llmsched this file imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmsched"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("llmsched"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value).rstrip(".")
                found.update(m for m in known if m.startswith(prefix + "."))
    return {m for m in found if m in known}


def floor(module: str) -> int:
    part = module.split(".")[1] if "." in module else "__init__"
    return FLOORS[part]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_part_of_the_package_has_a_floor():
    assert {m.split(".")[1] for m in modules() if "." in m} <= set(FLOORS)


def test_no_import_goes_up_a_floor():
    upward = [(a, b) for a, deps in graph().items() for b in deps if floor(b) > floor(a)]
    assert upward == []


def test_no_import_circle():
    g = graph()
    # A package's __init__ re-exporting its own modules is not a circle through them.
    g = {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in g.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == []
