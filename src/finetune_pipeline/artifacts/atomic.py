"""Atomic, durable writes: a reader, a crash or a power cut sees the old file or the new one, never half.

A temporary file or folder is written beside the target, flushed to disk (``fsync``), renamed over
the target, and the folder's entry is flushed too. Temporaries are named
``.<name>.tmp-<host>-<pid>-<random>``: one left behind by a killed process (``kill -9``, power
cut) is removed by the next write into the same folder, once its process is gone.

Every JSON file goes through ``to_json``: non-finite floats become ``null`` (``NaN`` is not JSON).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune_pipeline.errors import PipelineError

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_TEMP = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-{_HOST}-{os.getpid()}-"


def remove_orphans(folder: Path) -> list[str]:
    """Delete temporaries in ``folder`` left by dead processes of this host; returns their names."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        try:
            shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            pass  # another process cleaned it first, or it is not ours to remove
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    except OSError as e:
        raise PipelineError(f"{path}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _failed_writes_named(path):
            yield tmp_path
        tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    except OSError as e:  # disk full, quota, permissions: the old file (if any) stays as it was
        raise PipelineError(f"{path}: cannot write ({e.strerror or e}); nothing was replaced") from None
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    except OSError as e:
        raise PipelineError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with _failed_writes_named(path):
            yield tmp
        tmp.chmod(0o777 & ~_umask())
        for file in tmp.rglob("*"):
            if file.is_file():
                _fsync(file)
        _fsync(tmp)
        if path.exists():  # swap: the old folder steps aside by a rename, the new one takes its name, then
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))  # the old one is removed
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # put the old folder back: the target is never missing for long
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as e:
        raise PipelineError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_WRITE_FAILURES = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "os error 28",
    "file write failed",
    "I/O error",
)


@contextmanager
def _failed_writes_named(path: Path) -> Iterator[None]:
    """A failed write inside the block -- an OSError, or a library's own wrapping of one (safetensors,
    torch's zip writer) -- as one line naming ``path``; any other error passes unchanged."""
    try:
        yield
    except Exception as e:
        reason = write_failure(e)
        if reason is None:
            raise
        raise PipelineError(f"{path}: cannot write ({reason}); nothing was replaced") from None


def write_failure(error: Exception) -> str | None:
    """Why a write failed, when ``error`` is one (an OSError, or a library's error wrapping one);
    None for any other error, which is a bug to be seen whole."""
    if isinstance(error, PipelineError):
        return None
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = " ".join(str(error).split())
    hit = next((marker for marker in _WRITE_FAILURES if marker in text), None)
    if hit is None:
        return None
    return "No space left on device" if "os error 28" in text or "No space left" in text else text[:200]


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by None, for JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text (``null`` for non-finite numbers); raises on anything else JSON cannot hold."""
    return json.dumps(finite(obj), ensure_ascii=False, indent=indent, allow_nan=False)


def read_memo(path: Path) -> dict:
    """A memo file (a JSON object that can be rebuilt): {} when absent; {} with a warning when corrupt."""
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, dict):
            raise ValueError("not a JSON object")
        return entries
    except (OSError, ValueError) as e:
        logging.getLogger(__name__).warning("%s is corrupt (%s); rebuilding it", path, e)
        return {}


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(obj, indent=2) + "\n", encoding="utf-8")


def text_lines(text: str) -> list[str]:
    """The lines of a JSON Lines or plain-text file: split at "\n" (a "\r" before it dropped) and
    nowhere else. ``str.splitlines`` also splits at U+2028, U+2029, U+0085, form feeds and other
    characters that are valid inside a text (and raw inside a JSON string), which would cut one
    record or text into several."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(to_json(row) + "\n")


def save_torch(path: Path, obj: Any) -> None:
    import torch  # here: the tracker helper and light commands import this module without torch

    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full disk as a RuntimeError
            raise OSError(str(e).splitlines()[0]) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
