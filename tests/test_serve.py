"""``finetune-pipeline serve``: the real server in a subprocess, real HTTP requests."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from finetune_pipeline import Classifier

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, path, *options: str):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "finetune_pipeline",
                "serve",
                str(path),
                "--port",
                str(self.port),
                "--precision",
                "fp32",
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{self.proc.stdout.read()}")
            time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def predict(self, texts, top_k=3, **fields):
        body = json.dumps({"texts": texts, "top_k": top_k, **fields})
        return self.request("POST", "/predict", body, {"Content-Type": "application/json"})

    def stop(self, signum=signal.SIGTERM, group: bool = False) -> int:
        """SIGTERM to the server (what a process manager sends), or ``group``: to the server and its
        inference process (what Ctrl-C at a terminal does)."""
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout=60)

    def inference_pids(self) -> list[int]:
        return self.request("GET", "/health")[1]["inference_pids"]


def alive(pid: int) -> bool:
    """Running: some thread of it is not a zombie. A killed process's main thread can be a zombie while
    its other threads are still exiting (its pipes still open, not yet reapable); only when every
    thread is a zombie (or the process is reaped) is it gone."""
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for thread in threads:
        try:
            if (thread / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        except FileNotFoundError:  # that thread is gone
            pass
    return False


def read_response(sock: socket.socket) -> str:
    """The whole answer, headers and the body its Content-Length announces: a response can arrive in
    more than one segment (headers, then body)."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")), 0
    )
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


@pytest.fixture(scope="module")
def run(module_project):
    _, train_run = module_project
    return train_run("serve")


@pytest.fixture(scope="module")
def server(run):
    server = Server(
        run,
        "--max-wait-ms",
        "30",
        "--max-batch-size",
        "64",
        "--max-texts",
        "8",
        "--max-body-bytes",
        "4096",
        "--max-text-chars",
        "1000",
        "--max-request-chars",
        "2000",
        "--body-timeout",
        "2",
        "--workers",
        "2",
    )
    yield server
    if server.proc.poll() is None:
        server.stop()


TEXTS = ["Central bank raises rates", "Сборная выиграла финал", "New phone chip announced", "Elections next week", "a"]


def test_predict_health_labels_and_openapi(server, run):
    status, body = server.predict(TEXTS, top_k=2)
    expected = Classifier.from_run(run, device="cpu", precision="fp32").predict(TEXTS, top_k=2)
    assert status == 200 and [p["label"] for p in body["predictions"]] == [p["label"] for p in expected]
    for got, want in zip(body["predictions"], expected):
        assert got["score"] == pytest.approx(want["score"], abs=1e-6) and len(got["top_k"]) == 2
    labels = json.loads((run / "id_to_label.json").read_text())
    assert server.request("GET", "/labels") == (200, [{"id": int(i), **c} for i, c in labels.items()])
    status, health = server.request("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["classes"] == len(labels)
    assert health["engine"] == "torch" and len(set(health["inference_pids"])) == 2
    assert not set(health["inference_pids"]) & {server.proc.pid, os.getpid()}
    status, spec = server.request("GET", "/openapi.json")
    schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert status == 200 and {"texts", "top_k", "min_score"} <= set(schema["properties"])
    status, body = server.predict(TEXTS, top_k=2, min_score=1.0)  # abstain: nothing is that sure
    assert status == 200 and all(p["label"] is None and p["symbol"] is None for p in body["predictions"])
    assert [p["score"] for p in body["predictions"]] == pytest.approx([p["score"] for p in expected], abs=1e-6)


def test_docs_and_redoc_load_their_assets_from_the_server_and_errors_are_documented(server):
    import re

    def get(path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    for page in ("/docs", "/redoc"):
        status, html = get(page)
        assets = re.findall(r"""(?:src|href)=["']?([^"' >]+\.(?:js|css))""", html.decode())
        assert status == 200 and assets, page
        for asset in assets:
            assert asset.startswith("/"), (page, asset)  # this server, never a CDN
            status, body = get(asset)
            assert status == 200 and len(body) > 10_000, asset
        assert b"cdn." not in html and b"fonts.googleapis" not in html
    spec = server.request("GET", "/openapi.json")[1]
    responses = spec["paths"]["/predict"]["post"]["responses"]
    for code in ("400", "413", "422", "503"):
        content = responses[code]["content"]["application/json"]
        assert content["schema"]["$ref"].endswith("/ErrorBody") and content["example"]["error"], code


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(server):
    alone = {text: server.predict([text])[1]["predictions"][0] for text in TEXTS}
    before = server.request("GET", "/health")[1]["batches"]
    requests = [[TEXTS[i % 5], TEXTS[(i + 2) % 5]] for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(server.predict, requests))
    for texts, (status, body) in zip(requests, answers):
        assert status == 200 and len(body["predictions"]) == 2
        for text, got in zip(texts, body["predictions"]):
            assert got["label"] == alone[text]["label"] and got["score"] == pytest.approx(
                alone[text]["score"], abs=1e-5
            )
    batches = server.request("GET", "/health")[1]["batches"] - before
    assert 1 <= batches < len(requests)  # requests arriving within 30 ms shared forward passes


@pytest.mark.parametrize(
    "body, headers, status, message",
    [
        ("{not json", {}, 400, "invalid JSON"),
        ("{}", {}, 422, "texts: Field required"),
        ('{"texts": []}', {}, 422, "texts: List should have at least 1 item"),
        ('{"texts": ["ok", 3]}', {}, 422, "texts.1: Input should be a valid string"),
        ('{"texts": "one string"}', {}, 422, "texts: Input should be a valid array"),
        (json.dumps({"texts": ["t"] * 9}), {}, 422, "texts: 9 texts, at most 8 per request"),
        ('{"texts": ["ok"], "top_k": 0}', {}, 422, "top_k: Input should be greater than or equal to 1"),
        (json.dumps({"texts": ["x" * 5000]}), {}, 413, "over the limit of 4096"),
        ("[1, 2]", {"Content-Type": "text/plain"}, 422, "the body: Input should be an object"),
        ('{"texts": ["ok"], "top_k": true}', {}, 422, "top_k: Input should be a valid integer"),
        ('{"texts": ["ok"], "top_k": "2"}', {}, 422, "top_k: Input should be a valid integer"),
        ('{"texts": ["ok"], "topk": 2}', {}, 422, "topk: Extra inputs are not permitted"),
        ('{"texts": ["ok"], "min_score": 1.5}', {}, 422, "min_score: Input should be less than or equal to 1"),
        pytest.param(
            '{"texts": [' + "[" * 1500 + "]" * 1500 + "]}",
            {},
            400,
            "invalid JSON: recursion limit exceeded",
            id="deeply nested",
        ),
        ('{"texts": ["ok", ""]}', {}, 422, "texts[1]: an empty or blank text"),
        ('{"texts": [" \\n\\t "]}', {}, 422, "texts[0]: an empty or blank text"),
        ('{"texts": ["sport"], "texts": ["economy"]}', {}, 400, "invalid JSON: key 'texts' given more than once"),
        (json.dumps({"texts": ["x" * 1500]}), {}, 422, "texts[0]: 1500 characters, over the server's limit of 1000"),
        (json.dumps({"texts": ["x" * 900] * 3}), {}, 413, "2700 characters together, over the server's limit of 2000"),
    ],
)
def test_bad_requests_get_a_one_line_4xx(server, body, headers, status, message):
    got_status, got = server.request("POST", "/predict", body, headers)
    assert got_status == status and set(got) == {"error"} and message in got["error"] and "\n" not in got["error"]


def test_unknown_paths_and_methods_get_the_same_one_line_error(server):
    for method, path, status in (("GET", "/predict", 405), ("GET", "/nope", 404), ("DELETE", "/labels", 405)):
        got_status, got = server.request(method, path)
        assert got_status == status and set(got) == {"error"} and got["error"].startswith(f"{method} {path}: ")


def test_a_client_that_disconnects_does_not_disturb_the_others(server):
    results = []
    others = threading.Thread(target=lambda: results.extend(server.predict([t]) for t in TEXTS * 3))
    others.start()
    for partial in (True, False):
        with socket.create_connection(("127.0.0.1", server.port)) as s:  # gone mid-body, or before the answer
            body = json.dumps({"texts": ["bye"] * 4}).encode()
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + (body[:10] if partial else body)
            )
    others.join()
    assert len(results) == 15 and all(status == 200 for status, _ in results)
    assert server.predict(["still fine"])[0] == 200


def test_a_client_that_stalls_mid_body_gets_408_and_holds_nothing(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        started = time.monotonic()
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"texts": ['
        )  # and then nothing
        answer = read_response(s)
    assert answer.startswith("HTTP/1.1 408") and "--body-timeout" in answer and time.monotonic() - started < 10
    assert server.predict(["still fine"])[0] == 200


def test_a_killed_inference_process_is_started_again(server):
    killed, other = server.inference_pids()
    os.kill(killed, signal.SIGKILL)  # the OOM killer, say
    while alive(killed):
        time.sleep(0.05)
    for text in ("after the crash", "and again"):  # one request per process: the free one is taken in turn
        status, body = server.predict([text])
        assert status == 200 and len(body["predictions"]) == 1, body
    deadline = time.monotonic() + 60  # a batch a client of the last test left behind may be the one restarting it
    while server.inference_pids()[0] == killed and time.monotonic() < deadline:
        time.sleep(0.1)
    restarted, same = server.inference_pids()
    assert same == other and restarted != killed and alive(restarted)


@pytest.mark.slow  # a server of its own (about 12 s); the default suite stops one with SIGTERM (test_sigterm_...)
def test_ctrl_c_lets_the_request_in_flight_finish_and_exits_0(run):
    server = Server(run, "--max-wait-ms", "1500")  # a request waits 1.5 s for company: Ctrl-C comes meanwhile
    [inference] = server.inference_pids()
    answer = []
    client = threading.Thread(target=lambda: answer.append(server.predict(["in flight"])))
    client.start()
    time.sleep(0.5)
    assert server.stop(signal.SIGINT, group=True) == 0  # the inference process too got SIGINT: it waits for the server
    client.join()
    assert answer and answer[0][0] == 200 and len(answer[0][1]["predictions"]) == 1
    assert "server stopped" in server.proc.stdout.read() and not alive(inference)


def test_the_onnxruntime_engine_loads_a_run_through_its_export_made_on_demand(run, tmp_path):
    """The fast equivalent of the slow server test below: what each inference process loads."""
    from finetune_pipeline.serving.loader import load
    from finetune_pipeline.serving.worker import EngineSpec

    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
    engine = load(EngineSpec(copy, "onnxruntime", "cpu", "auto", 8, 1))
    expected = Classifier.from_run(run, device="cpu", precision="fp32").probabilities(TEXTS)
    assert engine.graph.path == copy / "export" / "onnx" / "model.onnx"
    assert abs(engine.probabilities(TEXTS) - expected).max() <= 1e-4


@pytest.mark.slow
def test_the_onnxruntime_engine_exports_the_run_once_and_serves_the_same_answers(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export"))
    server = Server(copy, "--engine", "onnxruntime", "--workers", "2")  # the export is made before the processes start
    try:
        status, body = server.predict(TEXTS, top_k=2)
        health = server.request("GET", "/health")[1]
    finally:
        assert server.stop() == 0
    expected = Classifier.from_run(run, device="cpu", precision="fp32").predict(TEXTS, top_k=2)
    assert status == 200 and health["engine"] == "onnxruntime" and len(health["inference_pids"]) == 2
    for got, want in zip(body["predictions"], expected):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-4)
    assert (copy / "export" / "onnx" / "model.onnx").is_file()


def test_a_model_that_cannot_load_stops_the_server_in_one_line(run, tmp_path):
    from finetune_pipeline.errors import PipelineError
    from finetune_pipeline.serving.loader import engine_for
    from finetune_pipeline.serving.worker import EngineProcess, EngineSpec

    with pytest.raises(PipelineError, match="neither a run folder"):  # checked before a process starts
        engine_for(tmp_path, "torch")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "best_model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError) as error:  # raised in the inference process, reported here
        EngineProcess(EngineSpec(broken, "torch", "cpu", "fp32", 8, 1)).wait_ready()
    assert "best_model.pt" in str(error.value).splitlines()[0]  # the line the command prints


def test_a_taken_port_or_bad_address_fails_in_one_line_before_any_model_loads(run, caplog, monkeypatch):
    from finetune_pipeline.cli.pipeline import main
    from finetune_pipeline.serving import server as server_module

    def no_engines(*args):
        raise AssertionError("an inference process was started")

    monkeypatch.setattr(server_module, "start_engines", no_engines)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(run), "--port", str(port)]) == 1
    assert f"--port {port}: cannot listen there: the port is taken" in caplog.text
    caplog.clear()
    assert main(["serve", str(run), "--host", "no-such-host.invalid"]) == 1
    assert "--host 'no-such-host.invalid': not an address this machine can listen on" in caplog.text
    for option, value in (
        ("--port", "65536"),
        ("--port", "-1"),
        ("--max-wait-ms", "nan"),
        ("--max-wait-ms", "-5"),
        ("--max-wait-ms", "inf"),
    ):
        with pytest.raises(SystemExit) as stop:  # argparse: usage line, exit 2
            main(["serve", str(run), option, value])
        assert stop.value.code == 2, (option, value)


def test_when_uvicorn_cannot_start_the_inference_processes_and_socket_are_closed(run, monkeypatch):
    import uvicorn

    from finetune_pipeline.serving import server as server_module

    closed = []

    class Engine:  # stands in for an EngineProcess
        def probabilities(self, texts):
            raise AssertionError("no batch runs")

        def close(self):
            closed.append(self)

    def fails(self, sockets=None):
        raise SystemExit(1)  # what uvicorn does when its startup fails

    sockets = []
    real_socket = server_module.listening_socket
    monkeypatch.setattr(server_module, "listening_socket", lambda *a: sockets.append(real_socket(*a)) or sockets[-1])
    monkeypatch.setattr(server_module, "start_engines", lambda *args: [Engine(), Engine()])
    monkeypatch.setattr(uvicorn.Server, "run", fails)
    with pytest.raises(SystemExit):
        server_module.serve(run, "127.0.0.1", 0, workers=2)
    assert len(closed) == 2  # without this, the interpreter waited on them forever at exit
    assert len(sockets) == 1 and sockets[0].fileno() == -1  # the listening socket is closed too


def test_a_run_is_served_from_the_checkpoint_and_backbone_asked_for(run, tmp_path, caplog):
    import numpy as np

    from finetune_pipeline.cli.pipeline import main
    from finetune_pipeline.errors import PipelineError
    from finetune_pipeline.serving.loader import load
    from finetune_pipeline.serving.worker import EngineSpec

    final = load(EngineSpec(run, "torch", "cpu", "fp32", 8, 1, checkpoint="final_model.pt"))
    expected = Classifier.from_run(run, "final_model.pt", device="cpu", precision="fp32").probabilities(TEXTS)
    assert np.array_equal(final.probabilities(TEXTS), expected)
    with pytest.raises(PipelineError, match=str(tmp_path)):  # the folder given is the one loaded (and refused)
        load(EngineSpec(run, "torch", "cpu", "fp32", 8, 1, backbone=tmp_path))
    export = tmp_path / "onnx"
    assert main(["export", str(run), "--out", str(export)]) == 0
    assert main(["serve", str(export), "--checkpoint", "final_model.pt"]) == 1
    quantized = tmp_path / "onnx-int8"
    assert main(["export", str(run), "--out", str(quantized), "--quantize", "int8"]) == 0
    assert (
        load(EngineSpec(quantized, "onnxruntime-int8", "cpu", "auto", 8, 1)).graph.path.name == "model_quantized.onnx"
    )
    assert load(EngineSpec(quantized, "torch", "cpu", "auto", 8, 1)).graph.path.name == "model.onnx"
    assert "an exported folder holds one model; --checkpoint and --backbone apply to a run folder" in caplog.text
    empty = tmp_path / "no-final"
    shutil.copytree(run, empty, ignore=shutil.ignore_patterns("final_model.pt", "export"))
    assert main(["serve", str(empty), "--checkpoint", "final_model.pt"]) == 1
    assert "not a finished run folder (final_model.pt is missing)" in caplog.text


def test_requests_that_queue_while_a_batch_runs_form_the_next_batch():
    import asyncio

    import numpy as np

    from finetune_pipeline.serving.batcher import Batcher

    sizes = []

    def probabilities(texts):
        sizes.append(len(texts))
        time.sleep(0.05)  # a forward pass
        return np.arange(len(texts) * 2, dtype=np.float32).reshape(len(texts), 2)

    async def scenario():
        batcher = Batcher([probabilities], max_batch_size=64, max_wait_ms=1)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.02)  # the first batch is running; 20 requests queue meanwhile
        rest = [asyncio.ensure_future(batcher.submit([f"t{i}", f"u{i}"])) for i in range(20)]
        answers = await asyncio.gather(first, *rest)
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert sizes == [1, 40]  # not 20 batches of one request: they waited long past max_wait_ms
    assert [a.shape for a in answers] == [(1, 2)] + [(2, 2)] * 20
    assert answers[1][0, 0] == 0 and answers[2][0, 0] == 4  # each request got its own rows


def test_sigterm_stops_the_server_and_its_inference_processes(server):  # last: it stops the module's server
    inference = server.inference_pids()
    stalled = socket.create_connection(("127.0.0.1", server.port))  # a client stuck mid-body: no hang at shutdown
    stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
    started = time.monotonic()
    assert server.stop() == 0 and not any(alive(pid) for pid in inference)
    assert time.monotonic() - started < 20
    stalled.close()
    out = server.proc.stdout.read()
    assert "server stopped" in out and "Traceback" not in out  # nor from the clients that left mid-body


def children_of(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def test_a_stop_while_the_model_loads_closes_the_processes_started_and_the_socket(run, monkeypatch):
    """Fast equivalent of the next test (slow: a real server process): SIGTERM arrives while the
    second of two inference processes loads."""
    import finetune_pipeline.serving.worker as worker
    from finetune_pipeline.runtime.signals import Stopped
    from finetune_pipeline.serving import server as server_module

    started, closed, sockets = [], [], []

    class Loading:
        def __init__(self, spec):
            started.append(self)

        def wait_ready(self):
            if len(started) == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # as a process manager would, mid-load
                time.sleep(5)  # the signal handler raises before this ends

        def close(self):
            closed.append(self)

    real_socket = server_module.listening_socket
    monkeypatch.setattr(worker, "EngineProcess", Loading)
    monkeypatch.setattr(
        server_module, "listening_socket", lambda host, port: sockets.append(real_socket(host, port)) or sockets[-1]
    )
    with pytest.raises(Stopped) as stop:
        server_module.serve(run, "127.0.0.1", 0, workers=2)
    assert stop.value.exit_code == 143 and closed == started and len(started) == 2
    assert sockets[0].fileno() == -1  # closed


@pytest.mark.slow
def test_sigterm_while_the_model_loads_ends_in_one_line_and_leaves_no_process(run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "finetune_pipeline", "serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120

    def inference_children() -> list[int]:  # spawned processes (multiprocessing's spawn_main), not other children
        found = []
        for pid in children_of(proc.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
        return found

    while not inference_children() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # the inference process is starting: the model is about to load
    inference = inference_children()
    if not inference:
        proc.kill()
        raise AssertionError(f"no inference process was started:\n{proc.communicate()[0][-3000:]}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    out = proc.stdout.read()
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "stopped by SIGTERM" in errors[0] and "Traceback" not in out
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in inference) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in inference)


def test_with_two_engines_batches_run_side_by_side():
    import asyncio

    import numpy as np

    from finetune_pipeline.serving.batcher import Batcher

    running, most = [0], [0]
    lock = threading.Lock()

    def engine(texts):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.1)
        with lock:
            running[0] -= 1
        return np.array([[len(t), 0] for t in texts], dtype=np.float32)

    async def scenario():
        batcher = Batcher([engine, engine], max_batch_size=2, max_wait_ms=1)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(["x" * (i + 1)]) for i in range(8)))
        await batcher.stop()
        return answers, batcher.batches

    started = time.perf_counter()
    answers, batches = asyncio.run(scenario())
    assert most[0] == 2 and batches == 4 and time.perf_counter() - started < 0.35  # 4 batches, 2 at a time
    assert [a[0, 0] for a in answers] == [float(i + 1) for i in range(8)]  # each request got its own rows
