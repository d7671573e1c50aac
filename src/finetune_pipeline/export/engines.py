"""The engines of a run folder: ``Classifier.from_run(run, engine="torch" | "onnxruntime" |
"onnxruntime-int8")``. The onnxruntime engines run the run's ONNX export, made (and verified) on
first use and kept in ``<run>/export/onnx*/``; this sits above the exporters it calls, the readers
(``inference/``) below them. ``finetune_pipeline.Classifier`` is this class."""

from __future__ import annotations

import logging
from pathlib import Path

from filelock import FileLock

from finetune_pipeline.artifacts.names import BEST_MODEL_FILE
from finetune_pipeline.errors import PipelineError
from finetune_pipeline.export.onnx import export_dir, export_onnx, made_from
from finetune_pipeline.inference.manifest import ExportRecord
from finetune_pipeline.inference.onnx_graph import MODEL, int8_graph
from finetune_pipeline.inference.predictor import Classifier as ReadingClassifier
from finetune_pipeline.inference.predictor import check_onnxruntime_options, warn_if_training

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "onnxruntime-int8")  # the last: the export's dynamically quantized graph


class Classifier(ReadingClassifier):
    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        checkpoint: str = BEST_MODEL_FILE,
        backbone_path: str | Path | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        engine: str = "torch",
    ) -> Classifier:
        """Load a run folder's checkpoint (``best_model.pt`` or ``final_model.pt``), tokenizer and labels.

        ``engine="onnxruntime"`` / ``"onnxruntime-int8"``: the run's ONNX export (``<run>/export/onnx*/``;
        its fp32 or int8 graph), made and verified on the fly when missing, on the CPU."""
        if engine not in ENGINES:
            raise PipelineError(f"engine {engine!r}: choose one of {', '.join(ENGINES)}")
        if engine == "torch":
            return super().from_run(run_dir, checkpoint, backbone_path, device, precision, batch_size)
        warn_if_training(Path(run_dir), checkpoint)
        check_onnxruntime_options(device, precision)
        int8 = engine == "onnxruntime-int8"
        return cls.from_onnx_export(
            ensure_onnx_export(Path(run_dir), checkpoint, backbone_path, int8), batch_size, int8=int8
        )


def ensure_onnx_export(run: Path, checkpoint: str, backbone_path: str | Path | None, int8: bool = False) -> Path:
    """The run's ONNX export of ``checkpoint`` (with its int8 graph when ``int8``), exported (and
    verified) now if missing or made from an earlier version of that checkpoint file."""
    folder = run / export_dir(checkpoint)
    if not (run / checkpoint).is_file():
        raise PipelineError(f"{run}: not a finished run folder ({checkpoint} is missing)")

    def why_export() -> tuple[int, str] | None:  # (log level, reason); None: the export there is the one wanted
        if not (folder / MODEL).is_file():
            return logging.INFO, f"no ONNX export of {run / checkpoint} yet: exporting it to {folder}"
        if not made_from(folder, run / checkpoint):
            return logging.WARNING, (
                f"{folder} was exported from an earlier {checkpoint} (the run went on since): exporting it again"
            )
        if ExportRecord.read(folder).files is None:
            return (
                logging.WARNING,
                f"{folder} was made by an earlier version (no manifest of its files): exporting it again",
            )
        if int8 and int8_graph(folder) is None:
            return logging.INFO, f"{folder} has no int8 graph yet: exporting it again with one"
        return None

    if why_export() is None:  # no lock (and so no write) where the export is there: a read-only run works
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):  # two commands on one run: one exports, the other then uses it
        reason = why_export()
        if reason is None:
            return folder
        log.log(*reason)
        keep_int8 = int8 or int8_graph(folder) is not None  # an export made with --quantize keeps its int8 graph
        export_onnx(
            run,
            folder,
            checkpoint,
            quantize="int8" if keep_int8 else None,
            overwrite=True,
            backbone_path=Path(backbone_path) if backbone_path else None,
        )
    return folder
