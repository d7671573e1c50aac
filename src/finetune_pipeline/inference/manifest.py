"""``export.json``: what an export folder is, where it came from, and the SHA-256 of every file in it.

    {"format": "onnx" | "hf", "source": {"run": <run folder's name>, "checkpoint", "checkpoint_sha256",
     "checkpoint_stat": [size, mtime_ns]}, "files": {relative path: sha256}, ...the export's checks}

The run is named by its folder's name, never its path (an export is published). ``files`` lets a
loader prove that the folder is the one the export wrote and verified (``verify``); the result is
remembered per folder by the files' (size, mtime), so a large model is hashed once, not per load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from finetune_pipeline.artifacts.atomic import read_memo, write_json
from finetune_pipeline.backbone.identity import file_sha256
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.runtime.precision import machine_cache_dir

log = logging.getLogger(__name__)

REPORT = "export.json"
DOCUMENTATION = ("README.md",)  # listed, but an edited model card (e.g. on the Hub) changes no answer
MEMO = "export_manifests.json"  # in the per-user cache folder: folder -> stamps of its verified files


def checkpoint_source(run_dir: Path, checkpoint: str) -> dict:
    """What an export was made from: the run's name, the checkpoint's name, SHA-256 and (size, mtime) stamp."""
    path = run_dir / checkpoint
    stat = path.stat()
    return {
        "run": run_dir.resolve().name,
        "checkpoint": checkpoint,
        "checkpoint_sha256": file_sha256(path),
        "checkpoint_stat": [stat.st_size, stat.st_mtime_ns],
    }


def folder_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != REPORT)


def write_manifest(folder: Path, report: dict) -> dict:
    """Write ``export.json`` = ``report`` + the SHA-256 of every other file now in ``folder``."""
    report = {**report, "files": {name: file_sha256(folder / name) for name in folder_files(folder)}}
    write_json(folder / REPORT, report)
    return report


@dataclass(frozen=True)
class ExportSource:
    run: str  # the run folder's name
    checkpoint: str  # best_model.pt | final_model.pt
    checkpoint_sha256: str
    checkpoint_stat: list[int]  # [size, mtime_ns] when exported: a changed checkpoint is seen without hashing


@dataclass(frozen=True)
class ExportRecord:
    """``export.json`` as read back. ``files`` is None for exports made before manifests; ``checks``:
    the rest of the record (what the export measured), as the exporter wrote it."""

    format: str | None  # onnx | hf (None: an early ONNX export)
    source: ExportSource | None
    files: dict[str, str] | None
    checks: dict

    @classmethod
    def read(cls, folder: Path) -> ExportRecord:
        path = folder / REPORT
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise PipelineError(f"{path}: unreadable export record ({type(e).__name__}: {e})") from None
        files = raw.get("files")
        if files is not None and (not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values())):
            raise PipelineError(f"{path}: its files entry is not a map of file names to SHA-256")
        try:
            source = ExportSource(**raw["source"]) if raw.get("source") is not None else None
        except TypeError as e:
            raise PipelineError(f"{path}: its source entry is not an export's source ({e})") from None
        checks = {k: v for k, v in raw.items() if k not in ("format", "source", "files")}
        return cls(raw.get("format"), source, files, checks)


def _inside(folder: Path, name: str) -> bool:
    """A plain relative path that stays in ``folder`` (no absolute path, no '..', no link out)."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return False
    try:
        return (folder / name).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def _stamps(folder: Path, names) -> dict[str, list[int]]:
    return {n: [(folder / n).stat().st_size, (folder / n).stat().st_mtime_ns] for n in names}


def verify(folder: Path, cache_dir: Path | None = None) -> ExportRecord:
    """The folder's record, once every file listed in it has the recorded SHA-256 and no file was
    added. A folder made before manifests existed (no ``files``) is accepted with a warning to export
    it again. Mismatch: one line naming the file."""
    report = ExportRecord.read(folder)
    files = report.files
    if files is None:
        log.warning(
            "%s: an export without a manifest of its files (made by an older version); it cannot be "
            "checked -- export the run again",
            folder,
        )
        return report
    outside = [n for n in files if not _inside(folder, n)]
    if outside:
        raise PipelineError(f"{folder / REPORT}: lists {outside[0]!r}, which is not a file inside the export folder")
    present = {
        n for n in folder_files(folder) if not n.endswith(".lock") and not n.startswith(".")
    }  # .gitattributes, .cache/
    for name in sorted(set(files) - present):
        raise PipelineError(f"{folder / name}: listed in {REPORT} but missing; the export is incomplete")
    for name in sorted(present - set(files)):
        raise PipelineError(
            f"{folder / name}: not part of the export ({REPORT} does not list it); remove it or export again"
        )
    memo_path = (cache_dir or machine_cache_dir()) / MEMO
    key = str(folder.resolve())
    stamps = _stamps(folder, sorted(files))
    if read_memo(memo_path).get(key) == {"stamps": stamps, "files": files}:
        return report  # the same bytes were verified before (sizes and modification times unchanged)
    for name, expected in sorted(files.items()):
        if name in DOCUMENTATION:
            continue
        if file_sha256(folder / name) != expected:
            raise PipelineError(
                f"{folder / name}: its SHA-256 differs from the one {REPORT} records; the file was "
                "changed after the export (export the run again)"
            )
    try:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(memo_path) + ".lock", timeout=10):
            memo = read_memo(memo_path)
            memo[key] = {"stamps": stamps, "files": files}
            write_json(memo_path, memo)
    except (OSError, PipelineError) as e:  # a read-only cache: verified anyway, hashed again next time
        log.debug("could not remember the verification of %s: %s", folder, e)
    return report
