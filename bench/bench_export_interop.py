"""Exports in the tools users load them with, on a real pretrained encoder and real news.

    python bench/bench_export_interop.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en \
        --optimum-python <venv>/bin/python [--workdir /tmp/export-interop] [--reuse-runs]

1. Two frozen all-MiniLM-L6-v2 runs on AG News (data.split=files): truncated at 128 tokens, and
   data.long_text=chunk at 64 tokens (stride 16, mean pooling); each exported with --format hf, the
   first also with --format onnx --quantize int8.
2. ``finetune-pipeline predict``'s probabilities (torch engine, fp32) on the 760 test texts, plus 20
   long texts of 10 test texts each (so the windows of the chunked run matter).
3. Plain transformers in a process that never imports finetune_pipeline (tests/plain_tools.py):
   pipeline("text-classification", trust_remote_code=True) and AutoModelForSequenceClassification
   on the HF folders, and what happens without trust_remote_code; plain onnxruntime on the ONNX folder.
4. optimum in its own environment (--optimum-python; bench/optimum_check.py):
   ORTModelForSequenceClassification.from_pretrained(onnx folder) + pipeline, fp32 and
   file_name="model_quantized.onnx".

Per tool: the largest probability difference from predict, and the share of texts with predict's
label. Results: bench/results/export_interop.json and Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

from finetune_pipeline import Classifier
from finetune_pipeline.export.shared import test_texts

RUNS = {
    "truncate-128": ["data.max_length=128"],
    "chunk-64": ["data.max_length=64", "data.long_text=chunk", "data.chunk_stride=16"],
}


def train_and_export(
    workdir: Path, name: str, overrides: list[str], model: Path, dataset: Path, env: dict, reuse: bool
) -> Path:
    run = workdir / name
    if not (reuse and (run / "export" / "hf" / "export.json").is_file()):
        run_measured(
            [
                sys.executable,
                "train.py",
                "backbone=local",
                "backbone.name=all-MiniLM-L6-v2",
                f"backbone.path={model}",
                f"data.raw_dir={dataset}",
                "data.split=files",
                "training.epochs=3",
                "training.batch_size=64",
                *overrides,
                "logger=none",
                "training.progress_bar=false",
                f"hydra.run.dir={run}",
            ],
            env,
        )
        run_measured(
            [sys.executable, "-m", "finetune_pipeline", "export", str(run), "--format", "hf", "--overwrite"], env
        )
        if "data.long_text=chunk" not in overrides:
            run_measured(
                [
                    sys.executable,
                    "-m",
                    "finetune_pipeline",
                    "export",
                    str(run),
                    "--format",
                    "onnx",
                    "--quantize",
                    "int8",
                    "--overwrite",
                ],
                env,
            )
    return run


def compare(got, expected: np.ndarray) -> dict:
    if isinstance(got, str):
        return {"error": got}
    got = np.asarray(got)
    return {
        "max_abs_probability_difference": float(np.abs(got - expected).max()),
        "same_label": float((got.argmax(axis=1) == expected.argmax(axis=1)).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--optimum-python", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/export-interop"))
    parser.add_argument("--reuse-runs", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    results = {"machine": machine(), "date": str(date.today()), "runs": {}}
    cases, expected = [], {}
    for name, overrides in RUNS.items():
        run = train_and_export(
            args.workdir, name, overrides, args.model.resolve(), args.dataset.resolve(), env, args.reuse_runs
        )
        texts, _ = test_texts(run)
        texts = texts + [" ".join(texts[i::20][:10]) for i in range(20)]
        expected[name] = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(texts, progress=False)
        onnx = run / "export" / "onnx"
        cases.append(
            {
                "name": name,
                "hf": str(run / "export" / "hf"),
                "onnx": str(onnx) if onnx.is_dir() else None,
                "texts": texts,
            }
        )
    job, result = args.workdir / "plain_job.json", args.workdir / "plain_result.json"
    job.write_text(json.dumps({"cases": cases}), encoding="utf-8")
    plain_env = {**env, "HF_MODULES_CACHE": str(args.workdir / "hf_modules")}
    subprocess.run(
        [sys.executable, "-I", str(REPO / "tests" / "plain_tools.py"), str(job), str(result)],
        env=plain_env,
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
    )
    plain = json.loads(result.read_text(encoding="utf-8"))
    import onnxruntime
    import transformers

    results["project_env"] = {
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "imported_finetune_pipeline": plain["imported_finetune_pipeline"],
    }
    for case, got in zip(cases, plain["results"]):
        want = expected[case["name"]]
        entry = {
            "texts": len(case["texts"]),
            "transformers_pipeline": compare(got["pipeline"], want),
            "transformers_auto_model": compare(got["auto_model"], want),
            "without_trust_remote_code": got["without_trust"],
        }
        if "onnxruntime" in got:
            entry["onnxruntime"] = {
                **compare(got["onnxruntime"]["from_logits"], want),
                "outputs": got["onnxruntime"]["outputs"],
            }
        if case["onnx"]:
            texts_file = args.workdir / "optimum_texts.json"
            texts_file.write_text(json.dumps(case["texts"]), encoding="utf-8")
            out = args.workdir / "optimum_result.json"
            subprocess.run(
                [
                    str(args.optimum_python),
                    str(REPO / "bench" / "optimum_check.py"),
                    case["onnx"],
                    str(texts_file),
                    str(out),
                ],
                env=env,
                check=True,
                stdin=subprocess.DEVNULL,
            )
            optimum = json.loads(out.read_text(encoding="utf-8"))
            # dynamic int8 quantizes activations with one scale per batch tensor: answers depend on what shares
            # a batch. optimum's pipeline runs one text at a time; our engine batches by length (64 texts)
            int8_batched = Classifier.from_onnx_export(case["onnx"], int8=True).probabilities(
                case["texts"], progress=False
            )
            int8_alone = Classifier.from_onnx_export(case["onnx"], batch_size=1, int8=True).probabilities(
                case["texts"], progress=False
            )
            entry["optimum"] = {
                "versions": optimum["versions"],
                "outputs": optimum["outputs"],
                "fp32": compare(optimum["fp32"], want),
                "int8_against_our_int8_engine_one_text_per_batch": compare(optimum["int8"], int8_alone),
                "int8_against_our_int8_engine_batched": compare(optimum["int8"], int8_batched),
                "our_int8_batched_against_one_text_per_batch": compare(int8_batched, int8_alone),
                "int8_labels_against_fp32_predict": compare(optimum["int8"], want)["same_label"],
            }
        results["runs"][case["name"]] = entry
        print(case["name"], json.dumps(entry, indent=1), flush=True)
    (REPO / "bench" / "results" / "export_interop.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
