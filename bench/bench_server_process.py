"""Where the server's model runs, side by side in one run: the shipped server (one inference process),
the same FastAPI app with the model in the server's own process (what it was before), and two
inference processes of one thread each; plus the bf16 engine with autocast over fp32 weights (cast on
every pass), with its linear weights stored in bf16 once, and with those packed for oneDNN too.

    python bench/bench_server_process.py [--workdir /tmp/finetune-bench-engines] [--rounds 2]

Uses the MiniLM run that bench/bench_inference_engines.py trained and exported in --workdir. Each
round: offline texts/s (sorted, random groups of 32), then 32 clients x 1 text for --seconds against
each server variant, for both engines. Results: printed and written to
bench/results/server_process.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference_engines import free_port, load_test, random_groups_per_second, texts_per_second
from common import REPO, machine

from finetune_pipeline import Classifier
from finetune_pipeline.export.shared import test_texts


def serve_in_process(path: Path, engine: str, port: int) -> None:
    """The app with the classifier in this process, called from a thread (the server before issue 14's
    inference processes)."""
    import uvicorn

    from finetune_pipeline.serving.app import create_app
    from finetune_pipeline.serving.loader import load
    from finetune_pipeline.serving.worker import LoadedModel

    clf = load(path, engine, "cpu", "auto", 64)

    class InProcess:
        model = LoadedModel(engine, clf.labels, clf.symbols, os.getpid())

        @staticmethod
        def probabilities(texts):
            return clf.probabilities(texts, progress=False)

        @staticmethod
        def close():
            pass

    uvicorn.Server(
        uvicorn.Config(create_app([InProcess()], 64, 5.0), host="127.0.0.1", port=port, log_level="warning")
    ).run()


def started(command: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start: {command}")


def server_point(variant: str, path: Path, engine: str, texts: list[str], seconds: float) -> dict:
    port = free_port()
    serve = [
        sys.executable,
        "-m",
        "finetune_pipeline",
        "serve",
        str(path),
        "--port",
        str(port),
        "--engine",
        engine,
        "--max-wait-ms",
        "5",
        "--max-batch-size",
        "64",
    ]
    command = {
        "one inference process (shipped)": serve,
        "two inference processes x 1 thread": [*serve, "--workers", "2", "--threads", "1"],
        "model in the server process": [sys.executable, __file__, "--serve-in-process", str(path), engine, str(port)],
    }[variant]
    proc = started(command, port)
    try:
        load_test(port, texts, 8, 2.0)  # warm-up
        return load_test(port, texts, 32, seconds, 1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def linear_weights_cast_once(run: Path, texts: list[str]) -> dict:
    """bf16 engine: fp32 weights cast by autocast on every pass (before), linear weights stored in bf16
    once, and those packed once for oneDNN as well (shipped)."""
    import torch

    from finetune_pipeline.model.loading import load_classifier

    shipped = Classifier.from_run(run, device="cpu", precision="bf16")
    per_pass = Classifier.from_run(run, device="cpu", precision="bf16")
    per_pass.model = load_classifier(run / "best_model.pt").eval()
    bf16_once = Classifier.from_run(run, device="cpu", precision="bf16")
    bf16_once.model = load_classifier(run / "best_model.pt").eval()
    for module in bf16_once.model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(torch.bfloat16)
    variants = (
        ("autocast over fp32 weights", per_pass),
        ("linear weights in bf16 once", bf16_once),
        ("bf16 once and packed for oneDNN (shipped)", shipped),
    )
    return {
        name: {
            "sorted": texts_per_second(clf, texts),
            "random_groups_of_32": random_groups_per_second(clf, texts, 32),
            "random_groups_of_4": random_groups_per_second(clf, texts, 4),
        }
        for name, clf in variants
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-engines"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--serve-in-process", nargs=3, metavar=("PATH", "ENGINE", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_in_process:
        path, engine, port = args.serve_in_process
        serve_in_process(Path(path), engine, int(port))
        return
    run = args.workdir / "minilm"
    texts, _ = test_texts(run)
    results: dict = {"date": date.today().isoformat(), "machine": machine(), "rounds": []}
    results["bf16_weights"] = linear_weights_cast_once(run, texts)
    print(json.dumps(results["bf16_weights"], indent=1), flush=True)
    for _ in range(args.rounds):
        points = {}
        for engine, path in (("torch", run), ("onnxruntime", run / "export" / "onnx")):
            clf = Classifier.from_run(run, device="cpu", engine=engine)
            points[engine] = {
                "offline_sorted": texts_per_second(clf, texts),
                "offline_random_groups_of_32": random_groups_per_second(clf, texts, 32),
            }
            del clf
            for variant in (
                "one inference process (shipped)",
                "model in the server process",
                "two inference processes x 1 thread",
            ):
                points[engine][variant] = server_point(variant, path, engine, texts, args.seconds)
        results["rounds"].append(points)
        print(json.dumps(points, indent=1), flush=True)
    out = REPO / "bench" / "results" / "server_process.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def markdown(r: dict) -> str:
    rows = [
        f"Measured {r['date']} on {r['machine']}.",
        "",
        "| bf16 engine, MiniLM | sorted | random 32 | random 4 |",
        "|---|---|---|---|",
    ]
    rows += [
        f"| {name} | {v['sorted']:.0f} | {v['random_groups_of_32']:.0f} | {v['random_groups_of_4']:.0f} |"
        for name, v in r["bf16_weights"].items()
    ]
    rows += [
        "",
        "| round | engine | offline sorted | offline random 32 | one inference process | model in the "
        "server process | two processes x 1 thread |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, points in enumerate(r["rounds"], 1):
        for engine, p in points.items():
            cells = [
                f"{p[v]['texts_per_second']:.0f} ({p[v]['texts_per_second'] / p['offline_sorted']:.0%})"
                for v in (
                    "one inference process (shipped)",
                    "model in the server process",
                    "two inference processes x 1 thread",
                )
            ]
            rows.append(
                f"| {i} | {engine} | {p['offline_sorted']:.0f} | {p['offline_random_groups_of_32']:.0f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
