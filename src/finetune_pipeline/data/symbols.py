"""Short label symbols: a..z, aa..az, ba.., zz, aaa.. (bijective base 26), assigned stably."""

from __future__ import annotations

from collections.abc import Iterable

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def index_to_symbol(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', 701 -> 'zz', 702 -> 'aaa'."""
    if index < 0:
        raise ValueError(f"symbol index must be >= 0, got {index}")
    out = []
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        out.append(_LETTERS[rem])
    return "".join(reversed(out))


def symbol_to_index(symbol: str) -> int:
    if not symbol or any(c not in _LETTERS for c in symbol):
        raise ValueError(f"not a label symbol: {symbol!r}")
    n = 0
    for c in symbol:
        n = n * 26 + _LETTERS.index(c) + 1
    return n - 1


def extend_mapping(existing: dict[str, str], labels: Iterable[str]) -> dict[str, str]:
    """Keep every old label's symbol; give new labels (sorted) the next free symbols."""
    mapping = dict(existing)
    used = {symbol_to_index(s) for s in mapping.values()}
    next_index = max(used, default=-1) + 1
    for label in sorted(set(labels) - set(mapping)):
        mapping[label] = index_to_symbol(next_index)
        next_index += 1
    return mapping


def symbol_order(symbols: Iterable[str]) -> list[str]:
    """Symbols in assignment order (a, b, .., z, aa, ..): the order of class ids."""
    return sorted(set(symbols), key=symbol_to_index)
