"""The `llmsched` command line: the group and its entry point. Each command lives in `llmsched.commands`."""

from __future__ import annotations

import sys
from importlib import import_module

import click

from llmsched.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="llmsched")
def cli() -> None:
    """Schedulers for LLM inference (SLAI, RAD, Sarathi-Serve, vLLM, Orca, FasterTransformer), a calibrated
    discrete-event simulator, capacity search and the paper's reproduction."""


# Each module in llmsched.commands defines a click command named `command`.
COMMAND_MODULES: tuple[str, ...] = (
    "simulate",
    "capacity",
    "compare",
    "reproduce",
    "theory",
    "perf",
    "profile",
    "bench_engine",
    "serve",
    "model",
    "plan",
)


def register_commands() -> None:
    for name in COMMAND_MODULES:
        command = import_module(f"llmsched.commands.{name}").command
        if command.name not in cli.commands:
            cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every user error is one line on stderr and exit status 2, without a traceback."""
    try:
        register_commands()
        args = sys.argv[1:] if argv is None else list(argv)
        # The command line travels with the context: result files record it (studies/metadata.py).
        cli.main(args=args, prog_name="llmsched", standalone_mode=False, obj={"argv": args})
    except UserError as e:
        click.echo(f"llmsched: error: {e}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("llmsched: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"llmsched: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
