"""SIGINT (Ctrl-C) and SIGTERM (``kill``, SLURM pre-emption) stop training at the next optimizer step.

While training runs, the first signal only raises a flag; the loop then saves its state and raises
``Interrupted``, whose message names the command that resumes. A second signal acts as usual
(Ctrl-C twice: stop right now, losing the work since the last saved state).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from finetune_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(PipelineError):
    """Training stopped on a signal after saving its state; exit status 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Catch SIGINT/SIGTERM for the duration of the block (main thread only; elsewhere a no-op)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum, frame):
        flag.signum = signum
        for s in SIGNALS:  # a second signal is not caught
            signal.signal(s, previous[s])
        log.warning(
            "%s received: stopping after the current optimizer step and saving the training state "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield flag
    finally:
        for s in SIGNALS:
            signal.signal(s, previous[s])


class Stopped(BaseException):
    """SIGINT/SIGTERM outside the training loop. A BaseException, like KeyboardInterrupt, so no
    ``except Exception`` on the way turns it into another error, while every ``finally`` (temporary
    files, locks) still runs on the way out."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


@contextmanager
def raise_on_signals() -> Iterator[None]:
    """For the block: SIGINT and SIGTERM raise ``Stopped`` (SIGTERM would otherwise end the process
    without cleaning up). The training loop puts its own, gentler handler in place while it runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Stopped(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield
    except KeyboardInterrupt:  # a SIGINT that arrived before the handler was in place
        raise Stopped(signal.SIGINT) from None
    finally:
        for s in SIGNALS:
            signal.signal(s, previous[s])
