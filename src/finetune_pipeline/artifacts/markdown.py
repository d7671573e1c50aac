"""Text inside the Markdown files the project writes (reports, model cards, errors.md): inert and on one line."""

from __future__ import annotations

import html
import re

_MARKDOWN = re.compile(r"([\\`*_\[\]#|~])")  # what could end a table cell, start markup or a link


def markdown_cell(text: str) -> str:
    """Inert inside a Markdown table cell: one line, no markup, no HTML (a label, a text, a name)."""
    return _MARKDOWN.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=True))


def one_line(text: str, limit: int = 160) -> str:
    """A text on one line, cut to ``limit`` characters."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
