"""Nothing of this machine in a published folder: absolute paths found, and made public.

An export folder is meant to be copied, served elsewhere and pushed to the Hub. The paths a run
records (its folder, the backbone folder, ``data.raw_dir``) are absolute paths of the machine that
trained it; written into a model card or a config they tell strangers the machine's layout and
user names, and mean nothing anywhere else. Exports write names instead (``public_path``), and
every file of an export is scanned before it is written and before ``push`` uploads it.

What counts as a path of this machine: any absolute path in a file's text whose first two parts
exist here (``/home/ana/...``, ``/work/main/...``, ``/tmp/x/...``), and any of the paths the caller
names (the run folder, the backbone folder). Weight files are scanned in their header only
(safetensors) or for the named paths (ONNX graphs: their node names and doc strings).
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from pathlib import Path

# an absolute POSIX path inside text: a "/" not preceded by a word, a dot, a colon (URLs) or another "/"
_ABSOLUTE = re.compile(r"(?<![\w.:/~\\-])(/[^\s\"'`<>|:;,()\[\]{}\\/]+(?:/[^\s\"'`<>|:;,()\[\]{}\\/]+)+)")
TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml", ".py", ".model", ".jinja", ".vocab", ""}


def public_path(value: str) -> str:
    """A path as a published file may name it: its last part only (``/home/ana/models/x`` -> ``x``)."""
    return Path(value).name or value


def is_machine_path(candidate: str) -> bool:
    """Whether an absolute path names a place that exists on this machine (its first two parts do)."""
    parts = Path(candidate).parts  # ("/", "home", "ana", ...)
    return len(parts) >= 3 and os.path.isdir(os.path.join(*parts[:3]))


def machine_paths_in_text(text: str, named: tuple[str, ...] = ()) -> list[str]:
    found = [m for m in _ABSOLUTE.findall(text) if is_machine_path(m)]
    return found + [n for n in named if n and n in text and n not in found]


def machine_paths_in_file(path: Path, named: tuple[str, ...] = ()) -> list[str]:
    """The paths of this machine that ``path`` holds (empty: none)."""
    if path.suffix == ".safetensors":
        return machine_paths_in_text(_safetensors_header(path), named)
    if path.suffix.lower() in TEXT_SUFFIXES:
        try:
            return machine_paths_in_text(path.read_text(encoding="utf-8"), named)
        except UnicodeDecodeError:
            pass  # a binary file without a telling suffix: scanned for the named paths below
    return _named_in_bytes(path, named)


def machine_paths_in_folder(folder: Path, named: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """File (relative) -> the paths of this machine it holds, for every file of ``folder`` that holds any."""
    named = tuple(sorted({str(Path(n).resolve()) for n in named if n} | {str(n) for n in named if n}))
    found = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        hits = machine_paths_in_file(file, named)
        if hits:
            found[str(file.relative_to(folder))] = sorted(set(hits))
    return found


def _safetensors_header(path: Path) -> str:
    try:
        with path.open("rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            return f.read(min(size, 100_000_000)).decode("utf-8", errors="replace")
    except (OSError, struct.error):
        return ""  # an unreadable file is refused by the loader, not here


def _named_in_bytes(path: Path, named: tuple[str, ...]) -> list[str]:
    if not named or path.stat().st_size == 0:
        return []
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return [n for n in named if data.find(n.encode()) >= 0]


def without_machine_paths(obj):
    """A JSON-like value with every absolute path of this machine replaced by its last part."""
    if isinstance(obj, dict):
        return {k: without_machine_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [without_machine_paths(v) for v in obj]
    if isinstance(obj, str) and os.path.isabs(obj):
        return public_path(obj)
    if isinstance(obj, str):
        for hit in machine_paths_in_text(obj):
            obj = obj.replace(hit, public_path(hit))
    return obj


def describe(found: dict[str, list[str]]) -> str:
    """One line for an error: the first file and path, and how many more."""
    (file, paths), *_rest = found.items()
    more = sum(len(p) for p in found.values()) - 1
    return f"{file} holds {json.dumps(paths[0])}" + (f" (and {more} more)" if more else "")
