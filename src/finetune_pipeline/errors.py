"""The one exception type users see: a one-line message naming the file, record or key at fault."""


class PipelineError(Exception):
    """Bad input or configuration. ``train.py`` prints it on one line and exits with code 1."""


class ConfigError(PipelineError):
    """A config key that does not exist or has no value: a usage error, exit 2 (as argparse's)."""

    exit_code = 2


class RunFolderRefused(PipelineError):
    """The run folder is another run's, or another process holds it: nothing was written into it."""


def error_line(error: BaseException) -> str:
    """An exception's message on one line (its first), or its type's name when it has none."""
    return str(error).splitlines()[0] if str(error).strip() else type(error).__name__
