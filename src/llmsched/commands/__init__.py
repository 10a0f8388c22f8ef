"""CLI commands beyond simulate and perf, one module each, each defining a click command `command`.
`llmsched.cli` registers the modules named in its `COMMAND_MODULES`."""
