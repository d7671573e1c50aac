"""The one place where a command's failure becomes its one-line message and exit status.

PipelineError (bad input, config, files)   -> "[time][ERROR] <message>", exit 1 (ConfigError: 2)
OSError nobody foresaw (a path that is a file, a full disk, no permission)
                                           -> "[time][ERROR] <path>: <reason>", exit 1
Stopped (SIGINT / SIGTERM)                 -> "[time][ERROR] stopped by SIGTERM; <what was kept>", 130 / 143
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.signals import Stopped, raise_on_signals

log = logging.getLogger("finetune_pipeline")


def exit_status(command: Callable[[], None], when_stopped: str, signals: bool = True) -> int:
    """Run ``command`` with SIGINT/SIGTERM turned into ``Stopped``; 0, 1, or 128 + the signal.
    ``signals=False``: the command handles them itself (the HTTP server drains and exits 0)."""
    try:
        with raise_on_signals() if signals else contextlib.nullcontext():
            command()
    except PipelineError as e:
        log.error("%s", str(e).splitlines()[0] if str(e) else type(e).__name__)
        return getattr(e, "exit_code", 1)
    except Stopped as e:
        log.error("%s; %s", e, when_stopped)
        return e.exit_code
    except OSError as e:
        where = e.filename if e.filename is not None else "a file"
        log.error("%s: %s (%s); %s", where, e.strerror or e, type(e).__name__, when_stopped)
        return 1
    return 0
