"""The one error type a user sees: printed as one line by the CLI, exit status 2."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a spec). The message names what is wrong."""
