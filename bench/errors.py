"""The console script's user-facing error (its own module, so that ``bench/cli.py`` and the ``cmd_*`` modules it
imports do not import each other)."""


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""
