"""``finetune-pipeline serve``: the real server in a subprocess, real HTTP requests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from finetune_pipeline.inference.predictor import Classifier

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, path, *options: str):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "finetune_pipeline", "serve", str(path), "--port",
                                      str(self.port), "--precision", "fp32", *options],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
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

    def predict(self, texts, top_k=3):
        return self.request("POST", "/predict", json.dumps({"texts": texts, "top_k": top_k}),
                            {"Content-Type": "application/json"})

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def run(module_project):
    _, train_run = module_project
    return train_run("serve")


@pytest.fixture(scope="module")
def server(run):
    server = Server(run, "--max-wait-ms", "30", "--max-batch-size", "64", "--max-texts", "8", "--max-body-bytes", "4096")
    yield server
    if server.proc.poll() is None:
        server.stop()


TEXTS = ["Central bank raises rates", "Сборная выиграла финал", "New phone chip announced", "Elections next week", ""]


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
    status, spec = server.request("GET", "/openapi.json")
    schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert status == 200 and {"texts", "top_k"} <= set(schema["properties"])


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(server):
    alone = {text: server.predict([text])[1]["predictions"][0] for text in TEXTS}
    before = server.request("GET", "/health")[1]["batches"]
    requests = [[TEXTS[i % 5], TEXTS[(i + 2) % 5]] for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(server.predict, requests))
    for texts, (status, body) in zip(requests, answers):
        assert status == 200 and len(body["predictions"]) == 2
        for text, got in zip(texts, body["predictions"]):
            assert got["label"] == alone[text]["label"] and got["score"] == pytest.approx(alone[text]["score"], abs=1e-5)
    batches = server.request("GET", "/health")[1]["batches"] - before
    assert 1 <= batches < len(requests)  # requests arriving within 30 ms shared forward passes


@pytest.mark.parametrize("body, headers, status, message", [
    ("{not json", {}, 400, "invalid JSON"),
    ("{}", {}, 422, "texts: Field required"),
    ('{"texts": []}', {}, 422, "texts: List should have at least 1 item"),
    ('{"texts": ["ok", 3]}', {}, 422, "texts.1: Input should be a valid string"),
    ('{"texts": "one string"}', {}, 422, "texts: Input should be a valid array"),
    (json.dumps({"texts": ["t"] * 9}), {}, 422, "texts: 9 texts, at most 8 per request"),
    ('{"texts": ["ok"], "top_k": 0}', {}, 422, "top_k: Input should be greater than or equal to 1"),
    (json.dumps({"texts": ["x" * 5000]}), {}, 413, "over the limit of 4096"),
    ('[1, 2]', {"Content-Type": "text/plain"}, 422, "the body: Input should be an object"),
])
def test_bad_requests_get_a_one_line_4xx(server, body, headers, status, message):
    got_status, got = server.request("POST", "/predict", body, headers)
    assert got_status == status and set(got) == {"error"} and message in got["error"] and "\n" not in got["error"]


def test_a_client_that_disconnects_does_not_disturb_the_others(server):
    results = []
    others = threading.Thread(target=lambda: results.extend(server.predict([t]) for t in TEXTS * 3))
    others.start()
    for partial in (True, False):
        with socket.create_connection(("127.0.0.1", server.port)) as s:  # gone mid-body, or before the answer
            body = json.dumps({"texts": ["bye"] * 4}).encode()
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + (body[:10] if partial else body))
    others.join()
    assert len(results) == 15 and all(status == 200 for status, _ in results)
    assert server.predict(["still fine"])[0] == 200


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(run):
    server = Server(run, "--max-wait-ms", "1500")  # a request waits 1.5 s for company: SIGTERM comes meanwhile
    answer = []
    client = threading.Thread(target=lambda: answer.append(server.predict(["in flight"])))
    client.start()
    time.sleep(0.5)
    assert server.stop() == 0
    client.join()
    assert answer and answer[0][0] == 200 and len(answer[0][1]["predictions"]) == 1
    assert "server stopped" in server.proc.stdout.read()


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
        batcher = Batcher(probabilities, max_batch_size=64, max_wait_ms=1)
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
