"""Where a one-text-per-request server's time goes: batch sizes and the cores each process used.

Starts ``finetune-pipeline serve RUN`` (one inference process), drives it with 32 clients sending one
text per request (the load generator of bench_inference_engines.py), and reads per round: texts/s,
the batches the server ran (``/health``) and so their mean size, and the CPU time of the load
generator, the HTTP process and the inference process divided by the wall time (cores busy). Then,
in this process, the same engine offline: all texts in one call, and random groups of 8 / 16 / 32.

    python bench/bench_server_cpu.py /tmp/finetune-bench-engines/minilm --texts <datasets>/ag_news_test_en/part-3-test.json

``--pinned`` adds a second server whose HTTP process and the load generator keep to core 0 (every
thread, set after start), so the inference process's thread on core 1 is never preempted by them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference_engines import free_port, load_test, random_groups_per_second, texts_per_second
from common import REPO, machine

from finetune_pipeline import Classifier


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def health(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health")
    return json.loads(conn.getresponse().read())


def pin(pid: int, cores: set[int]) -> None:
    """Every thread of a process onto these cores."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def serve_rounds(
    run: Path, engine: str, texts: list[str], rounds: int, seconds: float, pinned: bool = False
) -> list[dict]:
    port = free_port()
    server = subprocess.Popen(
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                child = health(port)["inference_pids"][0]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.3)
        if pinned:  # the HTTP process and this load generator on core 0: core 1 is the model's alone
            pin(server.pid, {0})
            pin(os.getpid(), {0})
        load_test(port, texts, 8, 2.0)  # warm-up
        results = []
        for _ in range(rounds):
            batches, own, http_cpu, child_cpu = (
                health(port)["batches"],
                own_cpu_seconds(),
                cpu_seconds(server.pid),
                cpu_seconds(child),
            )
            start = time.perf_counter()
            point = load_test(port, texts, 32, seconds)
            wall = time.perf_counter() - start
            ran = health(port)["batches"] - batches
            results.append(
                {
                    "texts_per_second": point["texts_per_second"],
                    "batches": ran,
                    "mean_batch": point["requests"] / ran,
                    "cores_load_generator": (own_cpu_seconds() - own) / wall,
                    "cores_http_process": (cpu_seconds(server.pid) - http_cpu) / wall,
                    "cores_inference_process": (cpu_seconds(child) - child_cpu) / wall,
                }
            )
        return results
    finally:
        server.terminate()
        server.wait(timeout=60)
        pin(os.getpid(), set(range(os.cpu_count())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--texts", type=Path, required=True, help="a raw JSON part ({input, output} records)")
    parser.add_argument("--engine", default="torch", choices=["torch", "onnxruntime", "onnxruntime-int8"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--pinned", action="store_true", help="also a server whose HTTP process and load generator keep to core 0"
    )
    args = parser.parse_args()
    texts = [r["input"] for r in json.loads(args.texts.read_text(encoding="utf-8"))]
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "run": str(args.run),
        "engine": args.engine,
        "server_32_clients_x_1_text": serve_rounds(args.run, args.engine, texts, args.rounds, args.seconds),
    }
    if args.pinned:
        result["server_pinned_32_clients_x_1_text"] = serve_rounds(
            args.run, args.engine, texts, args.rounds, args.seconds, pinned=True
        )
    clf = Classifier.from_run(args.run, engine=args.engine)
    result["offline"] = {
        "sorted": texts_per_second(clf, texts),
        **{f"random {g}": random_groups_per_second(clf, texts, g) for g in (8, 16, 32)},
    }
    print(json.dumps(result, indent=1))
    suffix = "_pinned" if args.pinned else ""
    (REPO / "bench" / "results" / f"server_cpu_{args.engine}{suffix}.json").write_text(
        json.dumps(result, indent=2), encoding="utf-8"
    )


if __name__ == "__main__":
    main()
