"""Merge raw parts (or a Hugging Face dataset) into ``combined_dataset.json`` + ``output_to_symbol.json``.

The combined file holds ``{"input": text, "output": symbol}`` records (multi-label data: ``"output"``
is the list of the record's symbols); the mapping file maps each original label to its symbol.
A fingerprint of the source (its files' contents, and the text and
label fields read from them) is kept beside them in ``preprocess_meta.json`` so ``train.py``
rebuilds only when the data, or what is read from it, changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from finetune_pipeline.artifacts.atomic import write_json
from finetune_pipeline.backbone.identity import file_sha256
from finetune_pipeline.config.schema import DataConfig
from finetune_pipeline.data.hf_source import hf_fingerprint, read_hf_dataset
from finetune_pipeline.data.raw_reader import DEFAULT_FIELDS, Record, list_raw_files, read_raw_file
from finetune_pipeline.data.source import (
    DATASET_FILE,
    LEGACY_FOLDER,
    MAPPING_FILE,
    ProcessedPaths,
    legacy_mapping,
    processed_paths,
)
from finetune_pipeline.data.symbols import extend_mapping, symbol_to_index
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.paths import project_root, resolve_path
from finetune_pipeline.runtime.progress import progress_bar

log = logging.getLogger(__name__)

META_NAME = "preprocess_meta.json"
LOCK_NAME = ".preprocess.lock"
META_FORMAT = 5  # bump when the meta file gains fields that load_combined needs


@dataclass(frozen=True)
class CombinedDataset:
    texts: list[str]
    symbols: list[str | list[str]]  # one per text, or (a label list in the raw data) the text's list
    label_to_symbol: dict[str, str]  # original label -> symbol (every label ever seen)
    fingerprint: str  # of the raw files it was built from
    files: list[str]  # raw part of each record (for data.split=files)
    duplicates_dropped: int = 0  # exact (text, label) duplicates preprocessing dropped
    several_labels_at: str | None = None  # the first record listing other than one label ("part.json record 3")


def raw_fingerprint(contents: dict[str, bytes]) -> str:
    """SHA-256 over the raw files' names and contents (order-independent of listing)."""
    h = hashlib.sha256()
    for name in sorted(contents):
        h.update(name.encode() + b"\0" + hashlib.sha256(contents[name]).digest())
    return h.hexdigest()


def current_fingerprint(cfg: DataConfig) -> str:
    if cfg.hf.path:
        return _with_fields(hf_fingerprint(cfg), cfg)
    return _with_fields(raw_fingerprint(_read_all(list_raw_files(resolve_path(cfg.raw_dir)))), cfg)


def _with_fields(fingerprint: str, cfg: DataConfig) -> str:
    """The same files read with other text/label fields (or a label separator) are other data."""
    if (cfg.text_field, cfg.label_field) == DEFAULT_FIELDS and not cfg.label_separator:
        return fingerprint
    read_as = f"{fingerprint}\0{cfg.text_field}\0{cfg.label_field}"
    if cfg.label_separator:
        read_as += f"\0separator={cfg.label_separator}"
    return hashlib.sha256(read_as.encode()).hexdigest()


def source_name(cfg: DataConfig) -> str:
    """Where the data comes from, for messages: data.hf.path or data.raw_dir."""
    return f"data.hf.path={cfg.hf.path}" if cfg.hf.path else str(cfg.raw_dir)


def _read_source(cfg: DataConfig) -> tuple[list[Record], str, dict[str, int]]:
    """The records, the source's fingerprint and its parts (file name -> bytes, or split -> rows)."""
    if cfg.hf.path:
        records, fingerprint, rows = read_hf_dataset(cfg)
        return records, _with_fields(fingerprint, cfg), rows
    files = list_raw_files(resolve_path(cfg.raw_dir))
    contents = _read_all(files)
    fields = (cfg.text_field, cfg.label_field)
    records = []
    with progress_bar(sum(map(len, contents.values())), "reading the raw data", unit="B") as bar:
        for path in files:
            records += read_raw_file(path, contents[path.name], fields, cfg.label_separator or None)
            bar.update(len(contents[path.name]))
    return records, _with_fields(raw_fingerprint(contents), cfg), {name: len(data) for name, data in contents.items()}


def _read_all(files: list[Path]) -> dict[str, bytes]:
    contents = {}
    for path in files:
        try:
            contents[path.name] = path.read_bytes()
        except FileNotFoundError:  # deleted or renamed after the folder was listed
            raise PipelineError(f"{path}: disappeared while data/raw was read; was it being changed?") from None
        except OSError as e:  # permissions, a folder named *.json, I/O errors
            raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
    return contents


def stale_reason(cfg: DataConfig) -> str | None:
    """Why the combined dataset must be (re)built, or None when it is up to date."""
    paths = processed_paths(cfg)
    dataset, mapping = paths.dataset, paths.mapping
    meta = dataset.parent / META_NAME
    if not dataset.is_file() or not mapping.is_file():
        return f"{dataset.name} or {mapping.name} is missing"
    if not meta.is_file():
        return f"{meta.name} is missing"
    try:
        stored = json.loads(meta.read_text(encoding="utf-8"))
        stored_format, fingerprint = stored.get("format"), stored["raw_fingerprint"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{meta.name} is unreadable"
    if stored_format != META_FORMAT:
        return f"{meta.name} was written by an older version"
    if fingerprint != current_fingerprint(cfg):
        return f"{source_name(cfg)} (or the fields read from it) changed since the last preprocessing"
    if stored.get("dataset_sha256") != file_sha256(dataset):
        return f"{dataset.name} was changed or damaged after it was written"
    return None


def preprocess(cfg: DataConfig) -> dict:
    """Build the combined dataset and mapping; returns the summary also stored in the meta file."""
    paths = processed_paths(cfg)
    dataset_path, mapping_path = paths.dataset, paths.mapping
    records, fingerprint, parts = _read_source(cfg)
    _report_normalised_labels(records)

    unique, duplicates = _drop_exact_duplicates(records)
    conflicts = _texts_with_several_labels(unique)
    if conflicts:
        examples = "; ".join(f"{t[:60]!r} -> {sorted(labels, key=str)}" for t, labels in list(conflicts.items())[:3])
        log.warning("%d texts appear under more than one label (kept as they are): %s", len(conflicts), examples)

    every_label = {label for r in unique for label in labels_of(r)}
    mapping = extend_mapping(_starting_mapping(cfg, paths, every_label), every_label)
    combined = [{"input": r.text, "output": _symbols_of(r, mapping)} for r in unique]
    several = next((r for r in unique if isinstance(r.label, tuple) and len(r.label) != 1), None)
    summary = {
        "format": META_FORMAT,
        "raw_fingerprint": fingerprint,
        "source": source_name(cfg),
        "fields": {"text": cfg.text_field, "label": cfg.label_field},
        "raw_files": parts,  # file name -> bytes, or (a Hugging Face dataset) split -> rows
        "records_read": len(records),
        "records_written": len(combined),
        "duplicates_dropped": duplicates,
        "texts_with_conflicting_labels": len(conflicts),
        "labels": len(mapping),
        "several_labels_at": f"{several.file} {several.where}" if several else None,
        "record_files": _compact_files([r.file for r in unique]),
    }
    if current_fingerprint(cfg) != summary["raw_fingerprint"]:  # a copy or download still in progress
        raise PipelineError(
            f"{source_name(cfg)}: files changed while they were being preprocessed; nothing was "
            "written; run again once they are complete"
        )
    # everything validated: only now touch the outputs, each replaced atomically
    write_json(dataset_path, combined)
    write_json(mapping_path, mapping)
    summary["dataset_sha256"] = file_sha256(dataset_path)  # a damaged combined file is rebuilt, not trusted
    write_json(dataset_path.parent / META_NAME, summary)
    log.info(
        "preprocessed %s (%d parts): %d records, %d exact duplicates dropped, %d labels -> %s",
        source_name(cfg),
        len(parts),
        len(combined),
        duplicates,
        len(mapping),
        dataset_path,
    )
    return summary


def ensure_preprocessed(cfg: DataConfig, force: bool = False) -> None:
    """Preprocess when the source changed (``force``: always); two processes on one source: one
    builds, the other waits for it and then finds it up to date."""
    paths = processed_paths(cfg)
    if force or stale_reason(cfg) is not None:
        made = not paths.folder.exists()
        try:
            paths.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PipelineError(f"{paths.folder}: cannot create the processed folder ({e.strerror or e})") from None
        try:
            with FileLock(str(paths.folder / LOCK_NAME)):
                reason = "finetune-preprocess" if force else stale_reason(cfg)  # another may have built it meanwhile
                if reason is not None:
                    log.info("preprocessing %s: %s", source_name(cfg), reason)
                    preprocess(cfg)
                    return
        except BaseException:
            if made:  # bad input leaves no trace: the folder made for it goes again (while it holds only the lock)
                _remove_if_only_lock(paths.folder)
            raise
    log.info("combined dataset is up to date with %s: %s", source_name(cfg), paths.folder)


def _remove_if_only_lock(folder: Path) -> None:
    try:
        if [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
            folder.rmdir()
    except OSError:
        pass  # another process uses it now


def load_combined(cfg: DataConfig) -> CombinedDataset:
    """Read the combined dataset and mapping, checking that every symbol is in the mapping."""
    paths = processed_paths(cfg)
    dataset_path, mapping_path = paths.dataset, paths.mapping
    mapping = _read_mapping(mapping_path)
    known = set(mapping.values())
    try:
        rows = json.loads(dataset_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{dataset_path}: cannot read combined dataset: {e}") from None
    texts, symbols = [], []
    for i, row in enumerate(rows, start=1):
        output = row.get("output") if isinstance(row, dict) else None
        listed = isinstance(output, list) and all(isinstance(s, str) and s in known for s in output)
        if not isinstance(row, dict) or not isinstance(row.get("input"), str) or not (listed or output in known):
            raise PipelineError(
                f"{dataset_path}: record {i}: not an {{input, output}} record with a symbol (or a list of them) "
                f"from {mapping_path.name}"
            )
        texts.append(row["input"])
        symbols.append(output)
    meta = json.loads((dataset_path.parent / META_NAME).read_text(encoding="utf-8"))
    names, index = meta["record_files"]["names"], meta["record_files"]["index"]
    if len(index) != len(texts):
        raise PipelineError(
            f"{dataset_path.parent / META_NAME}: out of step with {dataset_path.name}; delete both to rebuild"
        )
    return CombinedDataset(
        texts,
        symbols,
        mapping,
        meta["raw_fingerprint"],
        [names[i] for i in index],
        int(meta.get("duplicates_dropped", 0)),
        meta.get("several_labels_at"),
    )


def labels_of(record: Record) -> tuple[str, ...]:
    """A record's labels: its one label, or its set."""
    return record.label if isinstance(record.label, tuple) else (record.label,)


def _symbols_of(record: Record, mapping: dict[str, str]) -> str | list[str]:
    """The combined file's "output": the label's symbol, or (a label list) the list of its labels' symbols."""
    if isinstance(record.label, tuple):
        return [mapping[label] for label in record.label]
    return mapping[record.label]


def _report_normalised_labels(records: list[Record]) -> None:
    changed = sorted({(r.written_label, r.label) for r in records if r.written_label}, key=str)
    if changed:
        examples = ", ".join(f"{written!r} -> {label!r}" for written, label in changed[:5])
        log.warning(
            "%d label spelling(s) normalised (surrounding whitespace, Unicode NFC) and merged with the "
            "label they spell: %s",
            len(changed),
            examples,
        )


def _compact_files(files: list[str]) -> dict:
    """Per-record file names as a table of names and one small int per record."""
    names = sorted(set(files))
    position = {n: i for i, n in enumerate(names)}
    return {"names": names, "index": [position[f] for f in files]}


def _drop_exact_duplicates(records: list[Record]) -> tuple[list[Record], int]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for r in records:
        if (r.text, r.label) not in seen:
            seen.add((r.text, r.label))
            unique.append(r)
    return unique, len(records) - len(unique)


def _texts_with_several_labels(records: list[Record]) -> dict[str, set[str]]:
    written: dict[str, set] = defaultdict(set)
    for r in records:
        written[r.text].add(r.label)
    return {t: labels for t, labels in written.items() if len(labels) > 1}


def _starting_mapping(cfg: DataConfig, paths: ProcessedPaths, labels: set[str]) -> dict[str, str]:
    """The symbols labels already have: the source's mapping file, or (a source's first preprocessing
    in its own folder) those an earlier version gave it in the shared data/combined_processed/."""
    if paths.mapping.is_file() or not paths.derived:
        return _read_mapping(paths.mapping)
    legacy = project_root() / LEGACY_FOLDER
    if not (legacy / DATASET_FILE).is_file():
        return {}
    kept = legacy_mapping(source_name(cfg), labels)
    try:
        _check_mapping(legacy / MAPPING_FILE, kept)
    except PipelineError:
        kept = {}
    log.info(
        "%s now has its own processed folder %s; %s",
        source_name(cfg),
        paths.folder,
        f"its {len(kept)} labels keep the symbols {LEGACY_FOLDER}/ gave them"
        if kept
        else f"{LEGACY_FOLDER}/ (shared by every source before) is left as it is; set data.dataset_path / "
        "data.label_mapping_path to its files to keep using them",
    )
    return kept


def _read_mapping(path: Path) -> dict[str, str]:
    """An existing label -> symbol mapping (empty when absent), validated."""
    if not path.is_file():
        return {}
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: cannot read label mapping: {e}") from None
    if not isinstance(mapping, dict):
        raise PipelineError(f"{path}: label mapping must be a JSON object of label -> symbol")
    _check_mapping(path, mapping)
    return mapping


def _check_mapping(path: Path, mapping: dict) -> None:
    for label, symbol in mapping.items():
        try:
            symbol_to_index(symbol)
        except (ValueError, TypeError):
            raise PipelineError(f"{path}: label {label!r}: {symbol!r} is not a symbol (a..z, aa, ..)") from None
    if len(set(mapping.values())) != len(mapping):
        raise PipelineError(f"{path}: two labels share one symbol")
