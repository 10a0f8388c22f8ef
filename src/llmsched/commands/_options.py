"""Options shared by the commands that run many simulations."""

from __future__ import annotations

from collections.abc import Callable

import click

from llmsched.errors import UserError
from llmsched.policies import POLICIES


def executor_options(f: Callable) -> Callable:
    for opt in reversed(
        [
            click.option(
                "--backend",
                type=str,
                default="process",
                show_default=True,
                help="Where runs execute: process (a pool over all cores) or ray.",
            ),
            click.option(
                "--ray-address", type=str, default=None, help="Join this Ray cluster (default: start a local one)."
            ),
            click.option("--workers", type=int, default=None, help="Parallel runs (default: all cores)."),
        ]
    ):
        f = opt(f)
    return f


def parse_policies(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise UserError("--policies is empty")
    for name in names:
        if name not in POLICIES:
            raise UserError(f"--policies: unknown policy {name!r}, expected names from {', '.join(POLICIES)}")
    if len(set(names)) != len(names):
        raise UserError(f"--policies {text!r} names a policy twice")
    return names
