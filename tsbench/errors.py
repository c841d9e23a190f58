"""The one error type a user sees: it becomes a single line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input from the user: what is wrong, where, and how to fix it, in one line."""

    exit_code = 2
