"""Progress bars for the long phases (reading the raw data, encoding, validation and test passes,
export checks): shown only when standard error is a terminal, so logs, CI and pipes get none; gone
once the phase ends."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, unit: str = "text", enabled: bool = True) -> tqdm:
    shown = enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", leave=False, disable=not shown)
