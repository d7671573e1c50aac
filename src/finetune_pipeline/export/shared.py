"""What both exports do: where they may write, the test texts they verify on, the tokenizer they
ship, and the paths of this machine they refuse to publish."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from finetune_pipeline.artifacts.atomic import text_lines, write_json
from finetune_pipeline.artifacts.names import (
    EVALUATION_DIR,
    ID_TO_LABEL_FILE,
    LABEL_TO_ID_FILE,
    PREDICTIONS_FILE,
    TOKENIZER_DIR,
)
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.export.local_paths import describe, machine_paths_in_folder, without_machine_paths
from finetune_pipeline.inference.manifest import REPORT, ExportRecord, folder_files

# what an ONNX export wrote before exports listed their files in export.json
OLD_ONNX_FILES = ("model.onnx", "model.int8.onnx", TOKENIZER_DIR, ID_TO_LABEL_FILE, LABEL_TO_ID_FILE, REPORT)
TOKENIZER_JSON = ("tokenizer_config.json", "special_tokens_map.json")  # may name the folder it was loaded from


def check_out_dir(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    """Where an export may go: a new folder, or with ``overwrite`` an earlier export -- never the run
    folder, a folder holding it, one of its artifacts, a file or a folder that holds files but no export."""
    out, run = out_dir.resolve(), run_dir.resolve()
    if out == run or out in run.parents:
        raise PipelineError(f"--out {out_dir}: is or holds the run folder {run_dir}; choose a new folder")
    if run in out.parents and (run / "export") not in (out, *out.parents):
        raise PipelineError(f"--out {out_dir}: inside the run folder only under {run_dir / 'export'}/")
    if not out.exists():
        return
    if not out.is_dir():
        raise PipelineError(f"--out {out_dir}: is a file; name a folder")
    if not any(out.iterdir()):  # an empty folder made for the export
        return
    if not overwrite:
        raise PipelineError(f"{out_dir}: an export is already there; pass --overwrite to replace it, or --out DIR")
    why = not_our_export(out)
    if why:
        raise PipelineError(
            f"--out {out_dir}: {why}; --overwrite replaces only an export this tool wrote (or an "
            "empty folder): choose another --out or empty it yourself"
        )


def not_our_export(folder: Path) -> str | None:
    """Why ``folder`` is not an export this tool wrote (None: it is one, and holds nothing else)."""
    if not (folder / REPORT).is_file():
        return f"holds files but no {REPORT}"
    try:
        report = ExportRecord.read(folder)
    except PipelineError:
        return f"its {REPORT} is not an export record of finetune-pipeline"
    if report.source is None:
        return f"its {REPORT} is not an export record of finetune-pipeline"
    present = folder_files(folder)
    listed = report.files
    if listed is not None:
        others = [name for name in present if name not in listed and not name.endswith(".lock")]
    else:  # an export from before the files were listed: only what such an export held
        others = [name for name in present if name.split("/", 1)[0] not in OLD_ONNX_FILES]
    return f"holds {others[0]}, which no export wrote" if others else None


def test_texts(run_dir: Path) -> tuple[list[str], np.ndarray | None]:
    """The run's test texts and their true class ids (from evaluation/test/predictions.jsonl)."""
    from finetune_pipeline.inference.classes import read_classes

    path = run_dir / EVALUATION_DIR / "test" / PREDICTIONS_FILE
    try:
        rows = [json.loads(line) for line in text_lines(path.read_text(encoding="utf-8")) if line.strip()]
        symbols = {c["symbol"]: i for i, c in enumerate(read_classes(run_dir / ID_TO_LABEL_FILE))}
        texts = [str(r["text"]) for r in rows]
        if rows and "true_symbols" in rows[0]:  # a multi-label run: 0/1 rows over the labels
            y_true = np.zeros((len(rows), len(symbols)), dtype=np.int64)
            for i, r in enumerate(rows):
                y_true[i, [symbols[s] for s in r["true_symbols"]]] = 1
        else:
            y_true = np.asarray([symbols[r["true_symbol"]] for r in rows])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PipelineError(
            f"{path}: the run's test texts are needed to verify the export ({type(e).__name__}: {e})"
        ) from None
    if not texts:
        raise PipelineError(f"{path}: no test texts to verify the export with")
    return texts, y_true


def save_tokenizer(tokenizer, folder: Path) -> None:
    """The tokenizer files, without the local path it was loaded from."""
    tokenizer.save_pretrained(folder)
    for name in TOKENIZER_JSON:
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("name_or_path", None)
            write_json(path, without_machine_paths(data))


def refuse_machine_paths(folder: Path, out_dir: Path, run_dir: Path, backbone_path: Path | None) -> None:
    found = machine_paths_in_folder(folder, (str(run_dir), str(backbone_path or "")))
    if found:
        raise PipelineError(f"{out_dir}: would publish a path of this machine ({describe(found)}); nothing written")
