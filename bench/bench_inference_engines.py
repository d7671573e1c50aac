"""Inference engines and the HTTP server, side by side in one run.

    python bench/bench_inference_engines.py --model <models>/all-MiniLM-L6-v2 --dataset <datasets>/ag_news_test_en \
        [--standin-config <backbones>/mmBERT-base]

1. all-MiniLM-L6-v2: a frozen run on AG News (data.split=files), exported with --quantize int8
   (export.json: the fp32 graph's largest probability difference and the int8 accuracy change on the
   760 test texts); texts/s on those texts of the PyTorch engine (precision auto, and fp32),
   onnxruntime fp32 and onnxruntime int8 (median of 3 passes after a warm-up).
2. the server on the same run (onnxruntime fp32 and the PyTorch engine): 1, 8 and 32 concurrent
   clients each sending one text per request, and 32 clients sending 8 texts per request, for
   --seconds each; texts/s, p50 and p99 latency, against offline ``probabilities`` on the same
   engine (all test texts in one call, so sorted by length), and against offline calls on random
   groups of 16 and 32 texts (what a server fed one text per request can batch).
3. with --standin-config: the mmBERT-base stand-in (random init, bench/make_standin.py), a frozen
   run on the project's data/raw, the same engine comparison on its test texts.
4. the ceiling: the best square-matmul speed (n = 1024, 2048) of torch fp32, torch bf16 and
   onnxruntime fp32 (a one-MatMul graph) in this process, and each engine's achieved GFLOP/s on the
   sorted MiniLM test texts (2 x non-embedding parameters x real tokens: padding and attention's
   T^2 terms left out, so slight underestimates). How far onnxruntime fp32 can get ahead of the
   PyTorch engine is bounded by how close the latter already runs to the fp32 peak.

Results: printed as Markdown and written to bench/results/inference_engines.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_measured

from finetune_pipeline import Classifier
from finetune_pipeline.export.shared import test_texts
from finetune_pipeline.inference.onnx_graph import INT8_MODEL, OnnxModel


def train_and_export(workdir: Path, name: str, overrides: list[str], env: dict, reuse: bool = False) -> Path:
    run = workdir / name
    if reuse and (run / "export" / "onnx" / INT8_MODEL).is_file():
        return run
    run_measured(
        [sys.executable, "train.py", *overrides, "logger=none", "training.progress_bar=false", f"hydra.run.dir={run}"],
        env,
    )
    run_measured([sys.executable, "-m", "finetune_pipeline", "export", str(run), "--quantize", "int8"], env)
    return run


def random_groups_per_second(clf: Classifier, texts: list[str], group: int) -> float:
    """Offline texts/s when the texts come in random groups of ``group`` (one call per group)."""
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    start = time.perf_counter()
    for i in range(0, len(shuffled), group):
        clf.probabilities(shuffled[i : i + group], progress=False)
    return len(shuffled) / (time.perf_counter() - start)


def texts_per_second(clf: Classifier, texts: list[str], repeats: int = 3) -> float:
    clf.probabilities(texts[:64], progress=False)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        clf.probabilities(texts, progress=False)
        times.append(time.perf_counter() - start)
    return len(texts) / statistics.median(times)


def engines(run: Path, texts: list[str]) -> dict:
    folder = run / "export" / "onnx"
    int8 = Classifier.from_onnx_export(folder)
    int8.graph = OnnxModel(folder / INT8_MODEL, int8.tokenizer.pad_token_id)
    candidates = {
        "pytorch (precision auto)": Classifier.from_run(run, device="cpu"),
        "pytorch fp32": Classifier.from_run(run, device="cpu", precision="fp32"),
        "onnxruntime fp32": Classifier.from_onnx_export(folder),
        "onnxruntime int8": int8,
    }
    result = {
        name: {
            "texts_per_second": texts_per_second(clf, texts),
            "precision": clf.precision.name,
            **{f"random_groups_of_{g}": random_groups_per_second(clf, texts, g) for g in (16, 32)},
        }
        for name, clf in candidates.items()
    }
    result["export"] = json.loads((folder / "export.json").read_text())
    return result


def matmul_peaks() -> dict[str, float]:
    """GFLOP/s of the best square matmul, per engine and precision, measured here."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    def best(run, n_values=(1024, 2048)) -> float:
        top = 0.0
        for n in n_values:
            once = run(n)
            once()  # warm-up
            reps = max(3, int(1e10 / (2 * n**3)))
            start = time.perf_counter()
            for _ in range(reps):
                once()
            top = max(top, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
        return top

    def torch_matmul(dtype):
        def run(n):
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            return lambda: torch.matmul(a, b)

        return run

    def ort_matmul(n):
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "mm",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = {x: np.random.rand(n, n).astype(np.float32) for x in "ab"}
        return lambda: session.run(None, feed)

    return {
        "torch fp32": best(torch_matmul(torch.float32)),
        "torch bf16": best(torch_matmul(torch.bfloat16)),
        "onnxruntime fp32": best(ort_matmul),
    }


def achieved_gflops(run: Path, texts: list[str], engines_measured: dict) -> dict[str, float]:
    """Each engine's GFLOP/s on the sorted texts: 2 x non-embedding parameters per real token."""
    clf = Classifier.from_run(run, device="cpu", precision="fp32")
    params = sum(p.numel() for n, p in clf.model.named_parameters() if "embeddings" not in n)
    lengths = [len(ids) for ids in clf.tokenizer(texts, truncation=True, max_length=clf.max_length)["input_ids"]]
    flops_per_text = 2 * params * sum(lengths) / len(lengths)
    return {
        name: figures["texts_per_second"] * flops_per_text / 1e9
        for name, figures in engines_measured.items()
        if isinstance(figures, dict) and "texts_per_second" in figures
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(port: int, texts: list[str], clients: int, seconds: float, per_request: int = 1) -> dict:
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.perf_counter() < stop_at:
            body = json.dumps({"texts": [texts[(i + k) % len(texts)] for k in range(per_request)], "top_k": 1})
            start = time.perf_counter()
            conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            with lock:
                latencies.append(time.perf_counter() - start)
                done[0] += per_request
            i += clients * per_request
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "texts_per_request": per_request,
        "texts_per_second": done[0] / elapsed,
        "requests": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
    }


def server(run: Path, engine: str, texts: list[str], seconds: float, env: dict) -> list[dict]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "finetune_pipeline",
            "serve",
            str(run),
            "--port",
            str(port),
            "--engine",
            engine,
            "--max-wait-ms",
            "5",
            "--max-batch-size",
            "64",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
        load_test(port, texts, 8, 2.0)  # warm-up
        return [
            load_test(port, texts, clients, seconds, per_request)
            for clients, per_request in ((1, 1), (8, 1), (32, 1), (32, 8))
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--standin-config", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="per load-test point")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/finetune-bench-engines"))
    parser.add_argument("--reuse-runs", action="store_true", help="measure the runs an earlier call left in --workdir")
    args = parser.parse_args()
    if not args.reuse_runs:
        shutil.rmtree(args.workdir, ignore_errors=True)
        shutil.copytree(REPO / "data" / "raw", args.workdir / "data" / "raw")
    env = {**os.environ, "FINETUNE_PIPELINE_ROOT": str(args.workdir), "HF_HUB_OFFLINE": "1"}
    results: dict = {"date": date.today().isoformat(), "machine": machine()}

    run = train_and_export(
        args.workdir,
        "minilm",
        [
            "backbone=local",
            "backbone.name=all-MiniLM-L6-v2",
            f"backbone.path={args.model.resolve()}",
            f"data.raw_dir={args.dataset.resolve()}",
            "data.max_length=128",
            "data.split=files",
            "training.epochs=5",
            "training.batch_size=64",
        ],
        env,
        args.reuse_runs,
    )
    texts, _ = test_texts(run)
    results["minilm"] = engines(run, texts)
    print(json.dumps(results["minilm"], indent=1), flush=True)
    results["ceiling"] = {
        "matmul_peak_gflops": matmul_peaks(),
        "minilm_achieved_gflops": achieved_gflops(run, texts, results["minilm"]),
    }
    print(json.dumps(results["ceiling"], indent=1), flush=True)
    results["server"] = {}
    for engine, offline in (("onnxruntime", "onnxruntime fp32"), ("torch", "pytorch (precision auto)")):
        points = server(run, engine, texts, args.seconds, env)
        offline_figures = results["minilm"][offline]
        results["server"][engine] = {
            "offline_texts_per_second": offline_figures["texts_per_second"],
            **{f"offline_{k}": v for k, v in offline_figures.items() if k.startswith("random")},
            "points": points,
        }
        print(engine, points, flush=True)

    if args.standin_config:
        standin = args.workdir / "mmbert-standin"
        if not (args.reuse_runs and standin.is_dir()):
            run_measured(
                [
                    sys.executable,
                    "bench/make_standin.py",
                    str(args.standin_config),
                    str(standin),
                    "--texts",
                    str(REPO / "data" / "raw"),
                ],
                env,
            )
        run = train_and_export(
            args.workdir,
            "standin",
            [f"backbone.path={standin}", "data.max_length=128", "training.epochs=1"],
            env,
            args.reuse_runs,
        )
        texts, _ = test_texts(run)
        results["mmbert_standin"] = engines(run, texts * 4)
        print(json.dumps(results["mmbert_standin"], indent=1), flush=True)

    out = REPO / "bench" / "results" / "inference_engines.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(markdown(results))


def markdown(r: dict) -> str:
    rows = [f"Measured {r['date']} on {r['machine']}.", ""]
    for key, title in (("minilm", "all-MiniLM-L6-v2, AG News test texts"), ("mmbert_standin", "mmBERT-base stand-in")):
        if key not in r:
            continue
        e = r[key]
        base = e["pytorch (precision auto)"]["texts_per_second"]
        rows += [
            f"**{title}** (max |p_onnx - p_torch| {e['export']['max_abs_probability_difference']:.1e}; int8 test "
            f"accuracy {100 * e['export']['int8_accuracy_change']:+.2f} points vs fp32)",
            "",
            "| engine | texts/s | vs PyTorch (auto) |",
            "|---|---|---|",
        ]
        for name in ("pytorch (precision auto)", "pytorch fp32", "onnxruntime fp32", "onnxruntime int8"):
            rows.append(
                f"| {name} ({e[name]['precision']}) | {e[name]['texts_per_second']:.0f} | "
                f"{e[name]['texts_per_second'] / base:.2f}x |"
            )
        rows.append("")
    if "ceiling" in r:
        peaks, achieved = r["ceiling"]["matmul_peak_gflops"], r["ceiling"]["minilm_achieved_gflops"]
        rows += [
            "**the ceiling** (best square matmul in this process; engines on the sorted MiniLM test texts)",
            "",
            "| | GFLOP/s | share of the fp32 / bf16 matmul peak |",
            "|---|---|---|",
        ]
        rows += [f"| matmul peak, {name} | {value:.0f} | |" for name, value in peaks.items()]
        peak_of = {
            "pytorch (precision auto)": f"torch {r['minilm']['pytorch (precision auto)']['precision']}",
            "pytorch fp32": "torch fp32",
            "onnxruntime fp32": "onnxruntime fp32",
            "onnxruntime int8": "onnxruntime fp32",
        }
        for name, value in achieved.items():
            rows.append(f"| {name} | {value:.0f} | {value / peaks[peak_of[name]]:.0%} of the {peak_of[name]} peak |")
        rows.append("")
    for engine, s in r.get("server", {}).items():
        rows += [
            f"**server, {engine} engine** (offline: {s['offline_texts_per_second']:.0f} texts/s sorted, "
            f"{s['offline_random_groups_of_16']:.0f} / {s['offline_random_groups_of_32']:.0f} in random groups "
            "of 16 / 32)",
            "",
            "| clients x texts per request | texts/s | vs offline | p50 | p99 |",
            "|---|---|---|---|---|",
        ]
        for p in s["points"]:
            rows.append(
                f"| {p['clients']} x {p['texts_per_request']} | {p['texts_per_second']:.0f} | "
                f"{p['texts_per_second'] / s['offline_texts_per_second']:.0%} | {p['p50_ms']:.0f} ms | "
                f"{p['p99_ms']:.0f} ms |"
            )
        rows.append("")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
