"""The commands' argument parser and value types: every command-line mistake is one line, exit 2."""

from __future__ import annotations

import argparse
import math


def checked(parse, expected: str, valid, rule: str):
    """An argparse ``type``: ``parse`` the text, then require ``valid(value)``; one-line errors."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return convert


positive_int = checked(int, "a whole number", lambda v: v >= 1, "must be >= 1")
port_number = checked(int, "a port number", lambda v: 0 <= v <= 65535, "a port is 0..65535")
milliseconds = checked(float, "milliseconds", lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")
seconds = checked(float, "seconds", lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")
probability = checked(float, "a score", lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")


class OneLineParser(argparse.ArgumentParser):
    """Command-line errors in one line (argparse prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
