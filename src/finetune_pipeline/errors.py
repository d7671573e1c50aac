"""The one exception type users see: a one-line message naming the file, record or key at fault."""


class PipelineError(Exception):
    """Bad input or configuration. ``train.py`` prints it on one line and exits with code 1."""
